/* The Huffman decoding loop of proto/hpack_codec.py in C.
 *
 * decode(data, start, end, states, symbols, flags) -> bytes | None
 *     The string Huffman-coded in data[start:end] (RFC 7541 5.2, Appendix B), four bits at
 *     a time through the transition tables hpack_codec builds at import (_HUFFMAN_STATES,
 *     _HUFFMAN_SYMBOLS, _HUFFMAN_FLAGS: 256 states x 16 nibbles each). None when the string
 *     is invalid (EOS in the data, padding longer than 7 bits or not all ones): the caller
 *     then runs its Python loop, the reference and the fallback of a build without a C
 *     compiler (BALANCER_PURE=1), which says why. tests/unit/proto compare the two.
 *
 * Compiled Python spends most of a string's decoding on boxing each symbol into a list
 * and turning the list into bytes; here a symbol is one store into a buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define TABLE_SIZE 4096
#define EMIT 1   /* the four bits completed a symbol */
#define FAIL 2   /* they reached EOS */
#define ACCEPT 4 /* the string may end here */

static int table(PyObject *object, const uint8_t **out) {
    if (!PyBytes_Check(object) || PyBytes_GET_SIZE(object) != TABLE_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a Huffman table must be bytes of 4096");
        return -1;
    }
    *out = (const uint8_t *)PyBytes_AS_STRING(object);
    return 0;
}

static PyObject *decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "decode() takes data, start, end, states, symbols, flags");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "decode() data must be bytes");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || end < start || end > PyBytes_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "decode() range outside data");
        return NULL;
    }
    const uint8_t *states, *symbols, *flags_of;
    if (table(args[3], &states) < 0 || table(args[4], &symbols) < 0 || table(args[5], &flags_of) < 0)
        return NULL;

    const uint8_t *in = (const uint8_t *)PyBytes_AS_STRING(args[0]) + start;
    Py_ssize_t n = end - start;
    /* Every code is at least 5 bits long: n bytes hold at most n * 8 / 5 symbols. */
    Py_ssize_t most = n * 8 / 5 + 1;
    char small[1024];
    char *out = most <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)most);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t k = 0;
    unsigned state = 0, flags = ACCEPT, at;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned byte = in[i];
        at = (state << 4) | (byte >> 4);
        flags = flags_of[at];
        if (flags & EMIT)
            out[k++] = (char)symbols[at];
        else if (flags & FAIL)
            goto invalid;
        at = ((unsigned)states[at] << 4) | (byte & 0x0F);
        flags = flags_of[at];
        if (flags & EMIT)
            out[k++] = (char)symbols[at];
        else if (flags & FAIL)
            goto invalid;
        state = states[at];
    }
    if (!(flags & ACCEPT))
        goto invalid;
    PyObject *result = PyBytes_FromStringAndSize(out, k);
    if (out != small)
        PyMem_Free(out);
    return result;
invalid:
    if (out != small)
        PyMem_Free(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL, "A Huffman-coded string decoded, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_huffman", NULL, -1, methods};

PyMODINIT_FUNC PyInit__huffman(void) { return PyModule_Create(&module); }
