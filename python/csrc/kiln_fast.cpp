/* kiln_fast.cpp — KilnLinear's forward in C (docs/python.md, "Overhead of the Python
 * path"): the base class kiln._fast.LinearBase, whose forward takes a plain f32
 * contiguous CPU tensor, allocates the output with ATen's CPU allocator and calls
 * kiln_layer_run — no Python frame, no argument parsing, no cffi. Every other input goes
 * to the Python general path (KilnLinear._forward_general), which checks and converts.
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
};

PyObject *str_general, *str_fail;

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
  PyObject *x = args[0];
  LinearBase *s = (LinearBase *)self;
  if (s->fast && THPVariable_CheckExact(x)) {
    const at::Tensor &t = THPVariable_Unpack(x);
    if (plain_input(t, s->K))
      return run_plain(s, t);
  }
  return PyObject_CallMethodOneArg(self, str_general, x);
}

/* _bind(run, layer, K, N, fast): kiln_layer_run's and the layer's addresses as integers
 * (cffi's), the shape, and whether the layer is plain f32 (KilnLinear._plain). */
PyObject *linear_bind(PyObject *self, PyObject *args) {
  PyObject *run, *layer;
  long long K, N;
  int fast;
  if (!PyArg_ParseTuple(args, "OOLLp", &run, &layer, &K, &N, &fast))
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
  Py_RETURN_NONE;
}

PyObject *linear_fast(PyObject *self, void *) {
  return PyBool_FromLong(((LinearBase *)self)->fast);
}

PyMethodDef linear_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))linear_forward, METH_FASTCALL | METH_KEYWORDS,
     "y = x · Wᵀ + b on the kiln layer (plain f32 inputs here, the rest through "
     "_forward_general)."},
    {"_bind", linear_bind, METH_VARARGS, "_bind(run, layer, K, N, fast)"},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef linear_getset[] = {
    {"fast_path", linear_fast, nullptr,
     "True when plain f32 contiguous inputs run from C (the layer is plain f32)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject LinearBaseType = {PyVarObject_HEAD_INIT(nullptr, 0)};

struct PyModuleDef fast_module = {PyModuleDef_HEAD_INIT, "kiln._fast",
                                  "KilnLinear's forward in C (python/csrc/kiln_fast.cpp)", -1,
                                  nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__fast(void) {
  LinearBaseType.tp_name = "kiln._fast.LinearBase";
  LinearBaseType.tp_basicsize = sizeof(LinearBase);
  LinearBaseType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE;
  LinearBaseType.tp_doc = "KilnLinear's C base: forward for plain f32 inputs";
  LinearBaseType.tp_methods = linear_methods;
  LinearBaseType.tp_getset = linear_getset;
  LinearBaseType.tp_new = PyType_GenericNew;
  str_general = PyUnicode_InternFromString("_forward_general");
  str_fail = PyUnicode_InternFromString("_fail");
  if (!str_general || !str_fail || PyType_Ready(&LinearBaseType) < 0)
    return nullptr;
  PyObject *m = PyModule_Create(&fast_module);
  if (!m)
    return nullptr;
  Py_INCREF(&LinearBaseType);
  if (PyModule_AddObject(m, "LinearBase", (PyObject *)&LinearBaseType) < 0) {
    Py_DECREF(&LinearBaseType);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
