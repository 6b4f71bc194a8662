/* A strict parser of one whole HTTP/1.x request head, in one call (net/http_session.py).
 *
 * parse_head(data) -> (method, url, version, fields) | None
 *     `data` is a client's read at a request boundary. When it holds exactly one complete
 *     request head with no body and nothing after it, and everything in it is plain, the
 *     result is what httptools' callbacks would have given: the method (one of GET, HEAD,
 *     OPTIONS, DELETE), the origin-form target, the version ("1.1" or "1.0") and the header
 *     fields as one flat list [name, value, name, value, ...] (values without the spaces
 *     after the colon). Otherwise None: the session then feeds the same bytes to httptools,
 *     which answers every unusual or malformed head as before. So anything llhttp might read
 *     differently, or that the session treats specially, is refused here:
 *       - another method, an absolute-form, "*" or empty target, any byte of the target
 *         outside a conservative set (no CTL, space, '#', '"', '<', '>', '\\', '^', '`',
 *         '{', '|', '}', DEL, non-ASCII);
 *       - a version other than HTTP/1.1 or HTTP/1.0, any line end but CRLF, leading empty
 *         lines;
 *       - a header name that is not a token or is followed by a space, an empty value, a value
 *         with a trailing space or tab, any CTL (but HTAB), DEL or non-ASCII byte in it,
 *         obs-fold (a line starting with a space or tab);
 *       - Transfer-Encoding, Content-Length (bodies stay on httptools), Upgrade, Expect;
 *       - a head not ended in `data`, or bytes after its end (pipelined requests).
 *       - more than MAX_FIELDS header fields.
 * The session applies its own limits (request line, header count and bytes) on the result.
 *
 * The scans need no bounds check: `data` ends with CRLF CRLF and no scan goes past a CR.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_FIELDS 100

static PyObject *method_get, *method_head, *method_options, *method_delete;
static PyObject *version_11, *version_10;

/* RFC 9110 tchar. */
static unsigned char is_tchar[256];
/* Request-target bytes accepted here (RFC 3986 unreserved, sub-delims, ':', '@', '/', '?', '%', '[', ']'). */
static unsigned char is_target[256];
/* Field value bytes accepted here: VCHAR, SP, HTAB. */
static unsigned char is_value[256];

static void fill_tables(void) {
    const char *tchar_extra = "!#$%&'*+-.^_`|~";
    const char *target_extra = "-._~!$&'()*+,;=:@/?%[]";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        is_tchar[c] = alnum || (c != 0 && strchr(tchar_extra, c) != NULL);
        is_target[c] = alnum || (c != 0 && strchr(target_extra, c) != NULL);
        is_value[c] = (c >= 0x21 && c <= 0x7E) || c == ' ' || c == '\t';
    }
}

static int name_is(const char *name, Py_ssize_t size, const char *lower) {
    Py_ssize_t n = (Py_ssize_t)strlen(lower);
    if (size != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* A header the session or llhttp treats specially, left to httptools. */
static int refused_name(const char *name, Py_ssize_t size) {
    return name_is(name, size, "transfer-encoding") || name_is(name, size, "content-length") ||
           name_is(name, size, "upgrade") || name_is(name, size, "expect");
}

static PyObject *parse_head(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_head() takes bytes");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    if (size < 18 || data[size - 4] != '\r' || data[size - 3] != '\n' || data[size - 2] != '\r' ||
        data[size - 1] != '\n')
        Py_RETURN_NONE; /* not one whole head: cheap refusal of partial reads */
    const char *p = data, *end = data + size;
    PyObject *method;
    if (memcmp(p, "GET /", 5) == 0) {
        method = method_get;
        p += 4;
    } else if (memcmp(p, "HEAD /", 6) == 0) {
        method = method_head;
        p += 5;
    } else if (size > 8 && memcmp(p, "OPTIONS /", 9) == 0) {
        method = method_options;
        p += 8;
    } else if (memcmp(p, "DELETE /", 8) == 0) {
        method = method_delete;
        p += 7;
    } else
        Py_RETURN_NONE;
    const char *url = p;
    while (is_target[(unsigned char)*p])
        p++;
    Py_ssize_t url_size = p - url;
    if (end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 || p[9] != '\r' || p[10] != '\n')
        Py_RETURN_NONE;
    PyObject *version;
    if (p[8] == '1')
        version = version_11;
    else if (p[8] == '0')
        version = version_10;
    else
        Py_RETURN_NONE;
    p += 11;
    /* Where each name and value is: the list is made once, of its final size. */
    const char *starts[2 * MAX_FIELDS];
    Py_ssize_t sizes[2 * MAX_FIELDS];
    Py_ssize_t count = 0;
    for (;;) {
        if (p[0] == '\r') { /* the empty line (size checks above keep p + 1 inside) */
            if (p[1] != '\n' || p + 2 != end)
                Py_RETURN_NONE;
            break;
        }
        if (count == 2 * MAX_FIELDS)
            Py_RETURN_NONE;
        const char *name = p;
        while (is_tchar[(unsigned char)*p])
            p++;
        Py_ssize_t name_size = p - name;
        if (name_size == 0 || *p != ':' || refused_name(name, name_size))
            Py_RETURN_NONE;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *value = p;
        while (is_value[(unsigned char)*p])
            p++;
        Py_ssize_t value_size = p - value;
        if (value_size == 0 || value[value_size - 1] == ' ' || value[value_size - 1] == '\t')
            Py_RETURN_NONE;
        if (end - p < 4 || p[0] != '\r' || p[1] != '\n')
            Py_RETURN_NONE; /* a CTL, DEL, non-ASCII byte or a bare CR/LF in the value */
        p += 2;
        starts[count] = name;
        sizes[count++] = name_size;
        starts[count] = value;
        sizes[count++] = value_size;
    }
    PyObject *fields = PyList_New(count);
    if (fields == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyBytes_FromStringAndSize(starts[i], sizes[i]);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(fields, i, item);
    }
    PyObject *url_bytes = PyBytes_FromStringAndSize(url, url_size);
    if (url_bytes == NULL)
        goto fail;
    PyObject *result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(url_bytes);
        goto fail;
    }
    Py_INCREF(method);
    Py_INCREF(version);
    PyTuple_SET_ITEM(result, 0, method);
    PyTuple_SET_ITEM(result, 1, url_bytes);
    PyTuple_SET_ITEM(result, 2, version);
    PyTuple_SET_ITEM(result, 3, fields);
    return result;
fail:
    Py_DECREF(fields);
    return NULL;
}

static PyMethodDef methods[] = {
    {"parse_head", parse_head, METH_O, "One whole plain request head as (method, url, version, fields), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_heads", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__heads(void) {
    fill_tables();
    method_get = PyBytes_FromString("GET");
    method_head = PyBytes_FromString("HEAD");
    method_options = PyBytes_FromString("OPTIONS");
    method_delete = PyBytes_FromString("DELETE");
    version_11 = PyUnicode_InternFromString("1.1");
    version_10 = PyUnicode_InternFromString("1.0");
    if (!method_get || !method_head || !method_options || !method_delete || !version_11 || !version_10)
        return NULL;
    return PyModule_Create(&module);
}
