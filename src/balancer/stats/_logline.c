/* The access log's text line, appended to its buffer in one C call (stats/accesslog.py;
 * AccessLog.format_text is the Python reference it mirrors, byte for byte).
 *
 * append_text(out, client, bracketed, frontend, backend, server,
 *             t_request, t_queue, t_connect, t_response, t_total,
 *             status, bytes_out, termination, request_line, xff) -> None
 *     Appends to the bytearray `out`, in UTF-8 (characters it cannot encode replaced by
 *     '?', as str.encode("utf-8", "replace") does):
 *         CLIENT BRACKETED FRONTEND BACKEND/SERVER TQ/TW/TC/TR/TA STATUS BYTES TERM "REQUEST"
 *     then ` xff="XFF"` when `xff` is not empty, then a newline. `bracketed` is the time
 *     already in its brackets with the space after them ("[05/Dec/2026:21:57:26.151] "),
 *     made once per millisecond by the caller. The timers, status and bytes are ints
 *     (the timers already truncated to milliseconds, -1 for a phase that never happened);
 *     every other argument is a str. Refuses other types (TypeError) and ints past 64
 *     bits (OverflowError), leaving `out` as it was.
 *
 * Why in C: compiled from Python, the line is a 20-piece f-string (each int made a str or
 * looked up, the pieces joined into a new str) and the buffer's lines joined and encoded
 * again at each flush: ~4k instructions per request, 5% of an HTTP/2 request over TLS.
 * Here the pieces go straight into the buffer, in one resize.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define STRINGS 8
#define NUMBERS 7
/* The longest decimal text of a 64-bit int: 19 digits and a sign. */
#define NUMBER_MAX 20

/* One str argument as UTF-8: borrowed from the str itself (its cached UTF-8, which an
 * ASCII str is), or, for a str that cannot be encoded strictly (lone surrogates), a bytes
 * copy encoded with "replace" held in `owned` until the line is written. */
typedef struct {
    const char *data;
    Py_ssize_t size;
    PyObject *owned;
} Text;

static int text_of(PyObject *value, Text *text) {
    text->owned = NULL;
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "append_text: expected str, got %.100s", Py_TYPE(value)->tp_name);
        return -1;
    }
    text->data = PyUnicode_AsUTF8AndSize(value, &text->size);
    if (text->data != NULL)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear();
    text->owned = PyUnicode_AsEncodedString(value, "utf-8", "replace");
    if (text->owned == NULL)
        return -1;
    text->data = PyBytes_AS_STRING(text->owned);
    text->size = PyBytes_GET_SIZE(text->owned);
    return 0;
}

/* `value`'s decimal text written backwards from `end`; returns where it starts. */
static char *decimal(long long value, char *end) {
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        *--end = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--end = '-';
    return end;
}

static char *put(char *at, const Text *text) {
    memcpy(at, text->data, (size_t)text->size);
    return at + text->size;
}

static PyObject *append_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 1 + STRINGS + NUMBERS) {
        PyErr_Format(PyExc_TypeError, "append_text: %d arguments expected, got %zd", 1 + STRINGS + NUMBERS, nargs);
        return NULL;
    }
    PyObject *out = args[0];
    if (!PyByteArray_CheckExact(out)) {
        PyErr_SetString(PyExc_TypeError, "append_text: the buffer must be a bytearray");
        return NULL;
    }
    /* Argument positions: the strings, then the numbers, in the line's order. */
    static const int string_at[STRINGS] = {1, 2, 3, 4, 5, 13, 14, 15};
    enum { CLIENT, BRACKETED, FRONTEND, BACKEND, SERVER, TERMINATION, REQUEST, XFF };
    Text texts[STRINGS];
    int made = 0;
    PyObject *result = NULL;
    for (; made < STRINGS; made++) {
        if (text_of(args[string_at[made]], &texts[made]) < 0)
            goto done;
    }
    /* The numbers' texts, each followed by its separator: "TQ/TW/TC/TR/TA STATUS BYTES ". */
    char numbers[NUMBERS * (NUMBER_MAX + 1)];
    char *number_end = numbers + sizeof numbers;
    char *at = number_end;
    for (int i = NUMBERS - 1; i >= 0; i--) {
        PyObject *value = args[6 + i];
        if (!PyLong_Check(value)) {
            PyErr_Format(PyExc_TypeError, "append_text: expected int, got %.100s", Py_TYPE(value)->tp_name);
            goto done;
        }
        long long number = PyLong_AsLongLong(value);
        if (number == -1 && PyErr_Occurred())
            goto done;
        *--at = i < 4 ? '/' : ' ';
        at = decimal(number, at);
    }
    Py_ssize_t numbers_size = number_end - at;
    int with_xff = texts[XFF].size > 0;
    /* Separators: 3 spaces and a slash before the numbers (the time's brackets and space
     * come with it), a space and 2 quotes after them, the newline; ` xff=""` when there is
     * an XFF. */
    Py_ssize_t size = numbers_size + 8 + (with_xff ? 7 : 0);
    for (int i = 0; i < STRINGS; i++) {
        if (i != XFF || with_xff)
            size += texts[i].size;
    }
    Py_ssize_t start = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, start + size) < 0)
        goto done;
    char *line = PyByteArray_AS_STRING(out) + start;
    char *w = line;
    w = put(w, &texts[CLIENT]);
    *w++ = ' ';
    w = put(w, &texts[BRACKETED]);
    w = put(w, &texts[FRONTEND]);
    *w++ = ' ';
    w = put(w, &texts[BACKEND]);
    *w++ = '/';
    w = put(w, &texts[SERVER]);
    *w++ = ' ';
    memcpy(w, at, (size_t)numbers_size);
    w += numbers_size;
    w = put(w, &texts[TERMINATION]);
    *w++ = ' ';
    *w++ = '"';
    w = put(w, &texts[REQUEST]);
    *w++ = '"';
    if (with_xff) {
        memcpy(w, " xff=\"", 6);
        w += 6;
        w = put(w, &texts[XFF]);
        *w++ = '"';
    }
    *w++ = '\n';
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < made; i++)
        Py_XDECREF(texts[i].owned);
    return result;
}

static PyMethodDef methods[] = {
    {"append_text", (PyCFunction)(void (*)(void))append_text, METH_FASTCALL,
     "Append one access log text line (AccessLog.format_text's, in UTF-8) to a bytearray."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_logline", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__logline(void) { return PyModule_Create(&module); }
