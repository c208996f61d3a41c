/* kiln_fast.cpp — KilnLinear's forward in C (docs/python.md, "Overhead of the Python
 * path"): the base class kiln._fast.LinearBase, whose forward takes a plain f32
 * contiguous CPU tensor, allocates the output with ATen's CPU allocator and calls
 * kiln_layer_run — no Python frame, no argument parsing, no cffi. Every other input goes
 * to the Python general path (KilnLinear._forward_general), which checks and converts.
 * Calling the module skips torch.nn.Module.__call__'s Python frames when that would
 * only have called forward (no hooks, not tracing or compiled: the check torch's
 * _call_impl makes, which linear.py verifies torch still makes before enabling it).
 * C++ only because a torch tensor is a C++ object; python/setup.py builds it against the
 * torch it finds. It does not link libkiln.so: the package hands it kiln_layer_run's
 * address from the library cffi opened, so both call the same code. */
#include <Python.h>

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include "kiln.h"

namespace {

using run_fn = decltype(&kiln_layer_run);

/* What the last full check found, valid while the dicts it read are unmodified (their
 * version tags, CPython < 3.12, where every change to a dict gives it a new tag, unique
 * process-wide): then the same hook dicts are bound, and only their sizes can have
 * changed. One entry for torch.nn.modules.module's globals, one per layer. */
#if PY_VERSION_HEX < 0x030C0000
#define KILN_DICT_TAGS 1
uint64_t dict_tag(PyObject *d) { return ((PyDictObject *)d)->ma_version_tag; }
#else
#define KILN_DICT_TAGS 0
#endif
struct HookCache {
  PyObject *dict;  // borrowed: compared, never dereferenced unless it is the live one
  uint64_t tag;
  PyObject *hooks[4];  // borrowed: dict holds them while its tag is unchanged
};

struct LinearBase {
  PyObject_HEAD
  run_fn run;          // kiln_layer_run of the library the package opened
  kiln_layer *layer;   // owned by the Python object (KilnLinear._layer)
  int64_t K, N;
  int fast;            // f32 output, no bias / gather / divide around the kernel
  PyTypeObject *direct_type;  // the class that keeps LinearBase's forward and __call__
  PyObject *out;       // the last small output, given again once nothing else holds it
  HookCache hooks;     // call_is_forward's last full check of the instance dict
};

/* Outputs up to this size are kept for reuse (a decode step's; SmolLM2's largest
 * layer at M = 1 is 6 KiB): at most this much per layer stays allocated. */
constexpr int64_t reuse_bytes = 64 << 10;

/* Below this many multiply-adds (a few to some tens of microseconds) the kernel runs
 * holding the GIL: releasing and taking it back costs more than another Python thread
 * could gain in that time. Above, other threads run meanwhile. */
constexpr double hold_gil_macs = 1 << 22;

PyObject *str_general, *str_fail, *str_forward, *str_compiled;
PyObject *str_hooks[4];         // the instance's hook dicts Module._call_impl checks
PyObject *str_global_hooks[4];  // the same module-wide, in torch.nn.modules.module
/* From _setup: torch.nn.Module.__call__ and torch.nn.modules.module's globals; NULL
 * until then (every call goes through Module.__call__). */
PyObject *module_call, *module_globals;
int direct_calls;

/* A tensor whose memory is what it says: exactly torch.Tensor (or Parameter), dense CPU
 * f32 with no Python, functorch, conjugate or negative-view keys, contiguous, [..., K].
 * Autograd / inference-mode and autocast keys do not change the values. */
bool plain_input(const at::Tensor &t, int64_t K) {
  const c10::DispatchKeySet ks = t.key_set() -
      c10::autograd_dispatch_keyset_with_ADInplaceOrView - c10::autocast_dispatch_keyset;
  return ks == c10::DispatchKeySet(c10::DispatchKey::CPU) && t.scalar_type() == at::kFloat &&
         t.dim() >= 1 && t.size(-1) == K && t.is_contiguous();
}

/* The kept output o, when giving it again is the same as giving a fresh tensor: nothing
 * but this layer references it — no other Python reference, weak reference or attribute,
 * no C++ owner, view or storage user (numpy, DLPack, autograd) — and it is still what
 * the call makes: the sizes, contiguous f32 CPU, no grad, created in the same inference
 * mode, its memory its own. Else nullptr. */
PyObject *reusable(PyObject *o, c10::ArrayRef<int64_t> sizes) {
  if (!o || Py_REFCNT(o) != 1 || !THPVariable_CheckExact(o))
    return nullptr;
  if (Py_TYPE(o)->tp_weaklistoffset && *PyObject_GET_WEAKREFS_LISTPTR(o))
    return nullptr;
  if (Py_TYPE(o)->tp_dictoffset) {
    PyObject **d = _PyObject_GetDictPtr(o);
    if (d && *d && (!PyDict_Check(*d) || PyDict_GET_SIZE(*d)))
      return nullptr;
  }
  const at::Tensor &y = THPVariable_Unpack(o);
  if (!y.defined() || y.use_count() != 1 || y.weak_use_count() != 1 ||
      !y.has_storage() || y.storage().use_count() != 1 || y.sizes() != sizes ||
      y.scalar_type() != at::kFloat || !y.is_cpu() || !y.is_contiguous() ||
      y.storage_offset() != 0 || y.requires_grad() ||
      y.is_inference() != c10::InferenceMode::is_enabled() ||
      y.storage().nbytes() < (size_t)y.numel() * sizeof(float))
    return nullptr;
  Py_INCREF(o);
  return o;
}

/* y[..., N] for x[..., K]: the layer's last small output when nothing holds it any more
 * (reusable), else a fresh tensor; a new reference. */
PyObject *output(LinearBase *s, const at::Tensor &t) {
  c10::SmallVector<int64_t, 6> sizes(t.sizes().begin(), t.sizes().end());
  sizes.back() = s->N;
  if (PyObject *o = reusable(s->out, sizes))
    return o;
  PyObject *o;
  try {
    o = THPVariable_Wrap(at::detail::empty_cpu(sizes, at::kFloat, std::nullopt, std::nullopt,
                                               std::nullopt, std::nullopt));
  } catch (const std::exception &e) {
    PyErr_Format(PyExc_MemoryError, "kiln: output of %lld floats: %s",
                 (long long)(t.numel() / s->K * s->N), e.what());
    return nullptr;
  }
  if (o && THPVariable_Unpack(o).numel() * (int64_t)sizeof(float) <= reuse_bytes) {
    Py_INCREF(o);
    Py_XSETREF(s->out, o);
  }
  return o;
}

PyObject *run_plain(LinearBase *s, const at::Tensor &t) {
  PyObject *o = output(s, t);
  if (!o)
    return nullptr;
  const at::Tensor &y = THPVariable_Unpack(o);  // o holds it
  const int64_t M = t.numel() / s->K;
  kiln_status st = KILN_STATUS_OK;
  if (M) {
    const float *x = t.const_data_ptr<float>();
    void *out = y.mutable_data_ptr();
    if ((double)M * (double)s->N * (double)s->K < hold_gil_macs) {
      st = s->run(s->layer, x, M, out);
    } else {
      Py_BEGIN_ALLOW_THREADS
      st = s->run(s->layer, x, M, out);
      Py_END_ALLOW_THREADS
    }
  }
  if (st != KILN_STATUS_OK) {  // KilnLinear._fail raises the context's KilnError
    Py_DECREF(o);
    PyObject *code = PyLong_FromLong(st);
    PyObject *r = code ? PyObject_CallMethodOneArg((PyObject *)s, str_fail, code) : nullptr;
    Py_XDECREF(code);
    if (r) {
      Py_DECREF(r);
      PyErr_Format(PyExc_RuntimeError, "kiln_layer_run failed (status %d)", (int)st);
    }
    return nullptr;
  }
  return o;
}

/* forward(x) / forward(input=x), as torch.nn.Linear is called. */
PyObject *linear_forward(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs + nkw != 1) {
    PyErr_Format(PyExc_TypeError, "KilnLinear.forward takes one input (%zd given)", nargs + nkw);
    return nullptr;
  }
  if (nkw && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "input")) {
    PyErr_Format(PyExc_TypeError, "KilnLinear.forward got an unexpected keyword %R (its "
                 "input is 'input')", PyTuple_GET_ITEM(kwnames, 0));
    return nullptr;
  }
  PyObject *x = args[0];
  LinearBase *s = (LinearBase *)self;
  if (s->fast && THPVariable_CheckExact(x)) {
    const at::Tensor &t = THPVariable_Unpack(x);
    if (plain_input(t, s->K))
      return run_plain(s, t);
  }
  return PyObject_CallMethodOneArg(self, str_general, x);
}

/* The hook dicts bound under key in d (borrowed), or nullptr when not a dict. */
PyObject *hook_dict(PyObject *d, PyObject *key) {
  PyObject *v = d ? PyDict_GetItemWithError(d, key) : nullptr;  // borrowed
  return v && PyDict_Check(v) ? v : nullptr;
}

HookCache global_hooks;

bool hooks_empty(const HookCache &c) {
  for (int i = 0; i < 4; i++)
    if (PyDict_GET_SIZE(c.hooks[i]))
      return false;
  return true;
}

/* Whether hooks under names in d are all empty dicts (and remember them in c). */
bool check_hooks(PyObject *d, PyObject *const names[4], HookCache *c) {
  c->dict = nullptr;
  for (int i = 0; i < 4; i++)
    if (!(c->hooks[i] = hook_dict(d, names[i])))
      return false;
#if KILN_DICT_TAGS
  c->dict = d;
  c->tag = dict_tag(d);
#endif
  return hooks_empty(*c);
}

bool cached(const HookCache &c, PyObject *d) {
#if KILN_DICT_TAGS
  return c.dict == d && c.tag == dict_tag(d);
#else
  (void)c, (void)d;
  return false;
#endif
}

/* 1 when Module.__call__ would only call LinearBase.forward: no hook anywhere, no
 * instance forward (accelerate's wrappers put one there), not compiled, not tracing.
 * Lookup errors count as "no" (the general call then reports them). */
int call_is_forward(LinearBase *s) {
  PyObject **dp = _PyObject_GetDictPtr((PyObject *)s);
  PyObject *d = dp ? *dp : nullptr;
  if (!d || !PyDict_Check(d))
    return 0;
  bool ok;
  if (cached(s->hooks, d)) {
    ok = hooks_empty(s->hooks);
  } else {
    PyObject *compiled = PyDict_GetItemWithError(d, str_compiled);  // Module.compile()'s
    ok = PyDict_GetItemWithError(d, str_forward) == nullptr &&
         (compiled == nullptr || compiled == Py_None) && check_hooks(d, str_hooks, &s->hooks);
  }
  if (ok)
    ok = cached(global_hooks, module_globals)
             ? hooks_empty(global_hooks)
             : check_hooks(module_globals, str_global_hooks, &global_hooks);
  if (ok)
    ok = !torch::jit::tracer::isTracing();
  if (PyErr_Occurred())
    PyErr_Clear();
  return ok;
}

/* module(x): forward directly when that is all Module.__call__ would do, else it. */
PyObject *linear_call(PyObject *self, PyObject *args, PyObject *kw) {
  LinearBase *s = (LinearBase *)self;
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  if (Py_TYPE(self) == s->direct_type && direct_calls && nargs == 1 &&
      (!kw || !PyDict_GET_SIZE(kw)) && call_is_forward(s))
    return linear_forward(self, &PyTuple_GET_ITEM(args, 0), 1, nullptr);
  if (!module_call) {
    PyErr_SetString(PyExc_RuntimeError, "kiln._fast: _setup was not called");
    return nullptr;
  }
  PyObject *stack[8];
  if (nargs + 1 > 8) {
    PyObject *bound = PyMethod_New(module_call, self);
    PyObject *r = bound ? PyObject_Call(bound, args, kw) : nullptr;
    Py_XDECREF(bound);
    return r;
  }
  stack[0] = self;
  for (Py_ssize_t i = 0; i < nargs; i++)
    stack[i + 1] = PyTuple_GET_ITEM(args, i);
  return PyObject_VectorcallDict(module_call, stack, nargs + 1, kw);
}

/* _setup(module_call, module_globals, direct): what linear_call needs; direct=False
 * keeps every call on Module.__call__ (linear.py found torch's check changed). */
PyObject *fast_setup(PyObject *, PyObject *args) {
  PyObject *call, *globals;
  int direct;
  if (!PyArg_ParseTuple(args, "OO!p", &call, &PyDict_Type, &globals, &direct))
    return nullptr;
  Py_INCREF(call);
  Py_XSETREF(module_call, call);
  Py_INCREF(globals);
  Py_XSETREF(module_globals, globals);
  direct_calls = direct;
  Py_RETURN_NONE;
}

/* _bind(run, layer, K, N, fast, direct): kiln_layer_run's and the layer's addresses as
 * integers (cffi's), the shape, whether the layer is plain f32 (KilnLinear._plain), and
 * whether self's class keeps LinearBase's forward and __call__ (a later __class__
 * assignment then takes Module.__call__ again). */
PyObject *linear_bind(PyObject *self, PyObject *args) {
  PyObject *run, *layer;
  long long K, N;
  int fast, direct;
  if (!PyArg_ParseTuple(args, "OOLLpp", &run, &layer, &K, &N, &fast, &direct))
    return nullptr;
  void *r = PyLong_AsVoidPtr(run), *l = PyLong_AsVoidPtr(layer);
  if (PyErr_Occurred())
    return nullptr;
  if (!r || !l || K < 1 || N < 1) {
    PyErr_Format(PyExc_ValueError, "kiln._fast: bad layer (run %p, layer %p, %lld x %lld)", r,
                 l, N, K);
    return nullptr;
  }
  LinearBase *s = (LinearBase *)self;
  s->run = (run_fn)r;
  s->layer = (kiln_layer *)l;
  s->K = K;
  s->N = N;
  s->fast = fast;
  s->direct_type = direct ? Py_TYPE(self) : nullptr;  // not owned: self keeps it alive
  Py_RETURN_NONE;
}

/* The kept output is the layer's alone; the collector sees it (a user may hang the
 * layer on it). */
int linear_traverse(PyObject *self, visitproc visit, void *arg) {
  Py_VISIT(((LinearBase *)self)->out);
  Py_VISIT(Py_TYPE(self));  // a heap type's instances own a reference to it
  return 0;
}

int linear_clear(PyObject *self) {
  Py_CLEAR(((LinearBase *)self)->out);
  return 0;
}

void linear_dealloc(PyObject *self) {
  PyTypeObject *tp = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  linear_clear(self);
  tp->tp_free(self);
  Py_DECREF(tp);  // LinearBase is a heap type: subtype_dealloc leaves this to it
}

PyObject *linear_fast(PyObject *self, void *) {
  return PyBool_FromLong(((LinearBase *)self)->fast);
}

PyMethodDef linear_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))linear_forward, METH_FASTCALL | METH_KEYWORDS,
     "y = x · Wᵀ + b on the kiln layer (plain f32 inputs here, the rest through "
     "_forward_general)."},
    {"_bind", linear_bind, METH_VARARGS, "_bind(run, layer, K, N, fast, direct)"},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef linear_getset[] = {
    {"fast_path", linear_fast, nullptr,
     "True when plain f32 contiguous inputs run from C (the layer is plain f32)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot linear_slots[] = {
    {Py_tp_doc, (void *)"KilnLinear's C base: forward for plain f32 inputs, and __call__"},
    {Py_tp_methods, linear_methods},
    {Py_tp_getset, linear_getset},
    {Py_tp_call, (void *)linear_call},
    {Py_tp_traverse, (void *)linear_traverse},
    {Py_tp_clear, (void *)linear_clear},
    {Py_tp_dealloc, (void *)linear_dealloc},
    {Py_tp_new, (void *)PyType_GenericNew},
    {0, nullptr}};

PyType_Spec linear_spec = {"kiln._fast.LinearBase", sizeof(LinearBase), 0,
                           Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
                           linear_slots};

PyMethodDef fast_functions[] = {
    {"_setup", fast_setup, METH_VARARGS,
     "_setup(Module.__call__, torch.nn.modules.module.__dict__, direct)"},
    {nullptr, nullptr, 0, nullptr}};

struct PyModuleDef fast_module = {PyModuleDef_HEAD_INIT, "kiln._fast",
                                  "KilnLinear's forward in C (python/csrc/kiln_fast.cpp)", -1,
                                  fast_functions, nullptr, nullptr, nullptr, nullptr};

int intern_names() {
  static const char *hooks[4] = {"_backward_hooks", "_backward_pre_hooks", "_forward_hooks",
                                 "_forward_pre_hooks"};
  char global[64];
  for (int i = 0; i < 4; i++) {
    snprintf(global, sizeof global, "_global%s", hooks[i]);
    str_hooks[i] = PyUnicode_InternFromString(hooks[i]);
    str_global_hooks[i] = PyUnicode_InternFromString(global);
    if (!str_hooks[i] || !str_global_hooks[i])
      return -1;
  }
  str_general = PyUnicode_InternFromString("_forward_general");
  str_fail = PyUnicode_InternFromString("_fail");
  str_forward = PyUnicode_InternFromString("forward");
  str_compiled = PyUnicode_InternFromString("_compiled_call_impl");
  return str_general && str_fail && str_forward && str_compiled ? 0 : -1;
}

}  // namespace

PyMODINIT_FUNC PyInit__fast(void) {
  if (intern_names() < 0)
    return nullptr;
  PyObject *m = PyModule_Create(&fast_module);
  if (!m)
    return nullptr;
  PyObject *type = PyType_FromSpec(&linear_spec);
  if (!type || PyModule_AddObject(m, "LinearBase", type) < 0) {
    Py_XDECREF(type);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
