/* An HTTP/1.1 response head's fields as an HTTP/2 header list, in one C call
 * (net/h2_stream.py; proto/h2_message.py holds the Python reference of each function).
 *
 * response_headers(status, lines) -> list[tuple[bytes, bytes]]
 *     `lines` is the response's header lines as the upstream keeps them, CRLF between them
 *     (empty lines skipped). The list is (b":status", b"<status>") then, per line, its name
 *     (up to the first colon, the whole line without one) in lower case and its value (after
 *     that colon, b"" without one) without spaces and tabs at either end; a field HTTP/2
 *     must not carry (connection-specific, RFC 9113 8.2.2) is dropped. Exactly what
 *     h2_message.response_headers returns for the same arguments.
 * response_trailers(lines) -> list[tuple[bytes, bytes]]
 *     The same for a trailer section, less :status, and dropping also what a trailer section
 *     must not carry (h2_message.response_trailer_field): framing, routing and Trailer
 *     fields, and any name starting with a colon.
 *
 * Why in C: per response, the Python reference makes ~16 method calls (split, partition,
 * lower, strip per line); here one pass, and the usual field names are the same bytes
 * object every time (KNOWN below), whose hash the HPACK encoder's lookups then find cached.
 *
 * Bounds: every scan stops at the end of `lines`; a name is lowered into NAME_BUFFER bytes
 * on the stack only when it fits, else into its own new bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define NAME_BUFFER 64

/* Response field names made once: the usual ones, lower case. */
static const char *const KNOWN[] = {
    "accept-ranges", "access-control-allow-origin", "age", "alt-svc", "cache-control",
    "content-disposition", "content-encoding", "content-language", "content-length",
    "content-location", "content-range", "content-security-policy", "content-type", "date",
    "etag", "expires", "last-modified", "link", "location", "referrer-policy", "retry-after",
    "server", "set-cookie", "strict-transport-security", "vary", "via", "www-authenticate",
    "x-content-type-options", "x-frame-options", "x-xss-protection", "grpc-status", "grpc-message",
};
#define KNOWN_COUNT (sizeof(KNOWN) / sizeof(KNOWN[0]))
static PyObject *known_names[KNOWN_COUNT];
static Py_ssize_t known_sizes[KNOWN_COUNT];

/* b"100" .. b"599", made when first sent. */
static PyObject *status_bytes[500];
static PyObject *name_status, *empty_bytes;

static int is(const char *name, Py_ssize_t size, const char *lower) {
    return (Py_ssize_t)strlen(lower) == size && memcmp(name, lower, (size_t)size) == 0;
}

/* RFC 9113 8.2.2 (h2_message.CONNECTION_SPECIFIC); `name` in lower case. */
static int connection_specific(const char *name, Py_ssize_t size) {
    return is(name, size, "connection") || is(name, size, "keep-alive") || is(name, size, "proxy-connection") ||
           is(name, size, "transfer-encoding") || is(name, size, "upgrade") || is(name, size, "te");
}

/* What a trailer section must not carry beside those (h2_message.response_trailer_field). */
static int not_trailer(const char *name, Py_ssize_t size) {
    return (size > 0 && name[0] == ':') || is(name, size, "content-length") || is(name, size, "host") ||
           is(name, size, "trailer");
}

static void lower_into(char *out, const char *name, Py_ssize_t size) {
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
}

/* The field name `name` lower-cased, as a new reference; NULL with *dropped set when the
 * field is not to be sent, NULL with an exception on failure. */
static PyObject *field_name(const char *name, Py_ssize_t size, int trailer, int *dropped) {
    *dropped = 0;
    if (size <= NAME_BUFFER) {
        char lowered[NAME_BUFFER];
        lower_into(lowered, name, size);
        if (connection_specific(lowered, size) || (trailer && not_trailer(lowered, size))) {
            *dropped = 1;
            return NULL;
        }
        for (size_t k = 0; k < KNOWN_COUNT; k++) {
            if (known_sizes[k] == size && memcmp(KNOWN[k], lowered, (size_t)size) == 0) {
                Py_INCREF(known_names[k]);
                return known_names[k];
            }
        }
        return PyBytes_FromStringAndSize(lowered, size);
    }
    /* Longer than any name dropped above: only a leading colon can drop it. */
    if (trailer && name[0] == ':') {
        *dropped = 1;
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL)
        lower_into(PyBytes_AS_STRING(out), name, size);
    return out;
}

/* Append the fields of `lines` to `list`; 0, or -1 with an exception. */
static int add_fields(PyObject *list, PyObject *lines, int trailer) {
    const char *p = PyBytes_AS_STRING(lines), *end = p + PyBytes_GET_SIZE(lines);
    while (p < end) {
        /* The line ends at the next CRLF (a lone CR or LF stays in the line, as split does). */
        const char *eol = p;
        for (;;) {
            eol = memchr(eol, '\r', (size_t)(end - eol));
            if (eol == NULL) {
                eol = end;
                break;
            }
            if (eol + 1 < end && eol[1] == '\n')
                break;
            eol++;
        }
        const char *next = eol < end ? eol + 2 : end;
        if (eol == p) {
            p = next;
            continue;
        }
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        const char *name_end = colon != NULL ? colon : eol;
        const char *value = colon != NULL ? colon + 1 : eol, *value_end = eol;
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        int dropped;
        PyObject *name = field_name(p, name_end - p, trailer, &dropped);
        p = next;
        if (name == NULL) {
            if (dropped)
                continue;
            return -1;
        }
        PyObject *value_bytes = value_end > value ? PyBytes_FromStringAndSize(value, value_end - value) : empty_bytes;
        if (value_bytes == NULL) {
            Py_DECREF(name);
            return -1;
        }
        if (value_bytes == empty_bytes)
            Py_INCREF(value_bytes);
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value_bytes);
            return -1;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value_bytes);
        int failed = PyList_Append(list, pair);
        Py_DECREF(pair);
        if (failed)
            return -1;
    }
    return 0;
}

static PyObject *status_value(long status) {
    if (status >= 100 && status <= 599) {
        PyObject **slot = &status_bytes[status - 100];
        if (*slot == NULL)
            *slot = PyBytes_FromFormat("%ld", status);
        Py_XINCREF(*slot);
        return *slot;
    }
    return PyBytes_FromFormat("%ld", status);
}

static PyObject *response_headers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "response_headers(status: int, lines: bytes)");
        return NULL;
    }
    long status = PyLong_AsLong(args[0]);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    PyObject *code = status_value(status);
    if (code == NULL)
        return NULL;
    PyObject *first = PyTuple_Pack(2, name_status, code);
    Py_DECREF(code);
    if (first == NULL)
        return NULL;
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, first);
    if (add_fields(list, args[1], 0) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *response_trailers(PyObject *self, PyObject *lines) {
    (void)self;
    if (!PyBytes_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "response_trailers(lines: bytes)");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list != NULL && add_fields(list, lines, 1) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyMethodDef methods[] = {
    {"response_headers", (PyCFunction)(void (*)(void))response_headers, METH_FASTCALL,
     "The HTTP/2 header list of an HTTP/1.1 response head (h2_message.response_headers)."},
    {"response_trailers", response_trailers, METH_O,
     "The HTTP/2 trailer fields of an HTTP/1.1 trailer section (h2_message.response_trailers)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_h2_fields", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__h2_fields(void) {
    name_status = PyBytes_FromString(":status");
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (name_status == NULL || empty_bytes == NULL)
        return NULL;
    for (size_t k = 0; k < KNOWN_COUNT; k++) {
        known_sizes[k] = (Py_ssize_t)strlen(KNOWN[k]);
        known_names[k] = PyBytes_FromStringAndSize(KNOWN[k], known_sizes[k]);
        if (known_names[k] == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
