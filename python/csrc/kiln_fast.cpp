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
#include <torch/csrc/autograd/python_variable.h>

#include "kiln.h"

namespace {

using run_fn = decltype(&kiln_layer_run);

struct LinearBase {
  PyObject_HEAD
  run_fn run;          // kiln_layer_run of the library the package opened
  kiln_layer *layer;   // owned by the Python object (KilnLinear._layer)
  int64_t K, N;
  int fast;            // f32 output, no bias / gather / divide around the kernel
  PyTypeObject *direct_type;  // the class that keeps LinearBase's forward and __call__
};

PyObject *str_general, *str_fail, *str_forward, *str_compiled;
PyObject *str_hooks[4];         // the instance's hook dicts Module._call_impl checks
PyObject *str_global_hooks[4];  // the same module-wide, in torch.nn.modules.module
/* From _setup: torch.nn.Module.__call__, torch.nn.modules.module's globals, and
 * torch._C._is_tracing; NULL until then (every call goes through Module.__call__). */
PyObject *module_call, *module_globals, *is_tracing;
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

/* y[..., N] for x[..., K]: a fresh tensor each call (callers keep outputs). */
PyObject *run_plain(LinearBase *s, const at::Tensor &t) {
  c10::SmallVector<int64_t, 6> sizes(t.sizes().begin(), t.sizes().end());
  sizes.back() = s->N;
  at::Tensor y;
  try {
    y = at::detail::empty_cpu(sizes, at::kFloat, std::nullopt, std::nullopt, std::nullopt,
                              std::nullopt);
  } catch (const std::exception &e) {
    PyErr_Format(PyExc_MemoryError, "kiln: output of %lld floats: %s",
                 (long long)(t.numel() / s->K * s->N), e.what());
    return nullptr;
  }
  const int64_t M = t.numel() / s->K;
  kiln_status st = KILN_STATUS_OK;
  if (M) {
    const float *x = t.const_data_ptr<float>();
    void *out = y.mutable_data_ptr();
    Py_BEGIN_ALLOW_THREADS
    st = s->run(s->layer, x, M, out);
    Py_END_ALLOW_THREADS
  }
  if (st != KILN_STATUS_OK) {  // KilnLinear._fail raises the context's KilnError
    PyObject *code = PyLong_FromLong(st);
    PyObject *r = code ? PyObject_CallMethodOneArg((PyObject *)s, str_fail, code) : nullptr;
    Py_XDECREF(code);
    if (r) {
      Py_DECREF(r);
      PyErr_Format(PyExc_RuntimeError, "kiln_layer_run failed (status %d)", (int)st);
    }
    return nullptr;
  }
  return THPVariable_Wrap(std::move(y));
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

int empty_dict(PyObject *d, PyObject *key) {
  PyObject *v = d ? PyDict_GetItemWithError(d, key) : nullptr;  // borrowed
  return v && PyDict_Check(v) && PyDict_GET_SIZE(v) == 0;
}

/* 1 when Module.__call__ would only call LinearBase.forward: no hook anywhere, no
 * instance forward (accelerate's wrappers put one there), not compiled, not tracing.
 * Lookup errors count as "no" (the general call then reports them). */
int call_is_forward(PyObject *self) {
  PyObject *d = PyObject_GenericGetDict(self, nullptr);
  if (!d) {
    PyErr_Clear();
    return 0;
  }
  PyObject *compiled = PyDict_GetItemWithError(d, str_compiled);  // Module.compile()'s
  int ok = PyDict_GetItemWithError(d, str_forward) == nullptr &&
           (compiled == nullptr || compiled == Py_None);
  for (int i = 0; ok && i < 4; i++)
    ok = empty_dict(d, str_hooks[i]) && empty_dict(module_globals, str_global_hooks[i]);
  Py_DECREF(d);
  if (ok) {
    PyObject *t = PyObject_CallNoArgs(is_tracing);
    ok = t == Py_False;
    Py_XDECREF(t);
  }
  if (PyErr_Occurred())
    PyErr_Clear();
  return ok;
}

/* module(x): forward directly when that is all Module.__call__ would do, else it. */
PyObject *linear_call(PyObject *self, PyObject *args, PyObject *kw) {
  LinearBase *s = (LinearBase *)self;
  const Py_ssize_t nargs = PyTuple_GET_SIZE(args);
  if (Py_TYPE(self) == s->direct_type && direct_calls && nargs == 1 &&
      (!kw || !PyDict_GET_SIZE(kw)) && call_is_forward(self))
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

/* _setup(module_call, module_globals, is_tracing, direct): what linear_call needs;
 * direct=False keeps every call on Module.__call__ (linear.py found torch's check
 * changed). */
PyObject *fast_setup(PyObject *, PyObject *args) {
  PyObject *call, *globals, *tracing;
  int direct;
  if (!PyArg_ParseTuple(args, "OO!Op", &call, &PyDict_Type, &globals, &tracing, &direct))
    return nullptr;
  Py_INCREF(call);
  Py_XSETREF(module_call, call);
  Py_INCREF(globals);
  Py_XSETREF(module_globals, globals);
  Py_INCREF(tracing);
  Py_XSETREF(is_tracing, tracing);
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
    {Py_tp_new, (void *)PyType_GenericNew},
    {0, nullptr}};

PyType_Spec linear_spec = {"kiln._fast.LinearBase", sizeof(LinearBase), 0,
                           Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, linear_slots};

PyMethodDef fast_functions[] = {
    {"_setup", fast_setup, METH_VARARGS,
     "_setup(Module.__call__, torch.nn.modules.module.__dict__, torch._C._is_tracing, direct)"},
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
