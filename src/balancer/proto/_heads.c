/* A strict parser of one whole HTTP/1.x request head, in one call (net/http_session.py).
 *
 * parse_head(data) -> (method, url, version, headers, hop, host, host_count, header_bytes,
 *                       block) | None
 *     `data` is a client's read at a request boundary. When it holds exactly one complete
 *     request head with no body and nothing after it, and everything in it is plain, the
 *     result is what httptools' callbacks would have given: the method (one of GET, HEAD,
 *     OPTIONS, DELETE), the origin-form target, the version ("1.1" or "1.0") and the header
 *     fields as a list of (name, value) tuples (values without the spaces after the colon);
 *     then what the session would work out per field (net/http_session.py _take_head), so
 *     that a head of ordinary fields costs it no Python per field:
 *       - hop: None when a field is one the session treats apart, but Host and Connection
 *         (proto/http1.py header_kind: Proxy-Connection, X-Forwarded-For, X-Forwarded-Proto,
 *         TE, Trailer, Keep-Alive, Proxy-Authenticate, Proxy-Authorization; names in any
 *         case): `headers` is then every field, for the session's per-field path. Otherwise
 *         the Connection fields as (name, value) tuples (browsers send one), and `headers`
 *         the other fields: what the session forwards;
 *       - host: the last Host value (b"" without one), host_count: how many Host fields;
 *       - header_bytes: the sum of len(name) + len(value) + 4 over all the fields (the
 *         session's header size limit and the access log's bytes_in count this);
 *       - block: when every header line is exactly "Name: value" CRLF (one space after the
 *         colon) and hop is not None, the lines of `headers` as received, which are as the
 *         proxy would write them (one slice of `data` without Connection lines); b"" else.
 *     Otherwise None: the session then feeds the same bytes to httptools,
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
#include <stdint.h>
#include <string.h>

#define MAX_FIELDS 100

static PyObject *method_get, *method_head, *method_options, *method_delete;
static PyObject *version_11, *version_10, *empty_bytes;

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

/* A header the session treats apart from the others (proto/http1.py header_kind, but Host
 * and Connection, which the result carries, and the refused ones above). */
static int special_name(const char *name, Py_ssize_t size) {
    switch (name[0] | 0x20) {
    case 'x':
        return name_is(name, size, "x-forwarded-for") || name_is(name, size, "x-forwarded-proto");
    case 't':
        return name_is(name, size, "te") || name_is(name, size, "trailer");
    case 'k':
        return name_is(name, size, "keep-alive");
    case 'p':
        return name_is(name, size, "proxy-connection") || name_is(name, size, "proxy-authenticate") ||
               name_is(name, size, "proxy-authorization");
    default:
        return 0;
    }
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
    Py_ssize_t block_start = p - data, conn_count = 0;
    int plain = 1, as_written = 1;
    Py_ssize_t header_bytes = 0, host_count = 0, host_at = -1;
    /* Per field: whether it is a Connection field, and where its line ends (after CRLF). */
    unsigned char is_conn[MAX_FIELDS];
    const char *line_ends[MAX_FIELDS];
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
        const char *space = p;
        while (*p == ' ' || *p == '\t')
            p++;
        if (p - space != 1 || *space != ' ')
            as_written = 0; /* not "Name: value" as the proxy writes it */
        const char *value = p;
        /* Eight bytes at a time while all are 0x20..0x7E (most of a head is values); the
         * byte loop below reads from the first word that holds anything else (the CR that
         * ends the value, a tab, a CTL, DEL or non-ASCII byte) on. A word is read only
         * while it is all inside `data`. */
        while (end - p >= 8) {
            uint64_t word, low;
            memcpy(&word, p, 8);
            low = word & 0x7F7F7F7F7F7F7F7FULL; /* no byte carries into the next below */
            if ((word | (low + 0x0101010101010101ULL) | ~(low + 0x6060606060606060ULL)) & 0x8080808080808080ULL)
                break; /* a byte >= 0x80, == 0x7F or < 0x20 */
            p += 8;
        }
        while (is_value[(unsigned char)*p])
            p++;
        Py_ssize_t value_size = p - value;
        if (value_size == 0 || value[value_size - 1] == ' ' || value[value_size - 1] == '\t')
            Py_RETURN_NONE;
        if (end - p < 4 || p[0] != '\r' || p[1] != '\n')
            Py_RETURN_NONE; /* a CTL, DEL, non-ASCII byte or a bare CR/LF in the value */
        p += 2;
        is_conn[count / 2] = 0;
        line_ends[count / 2] = p;
        if (name_is(name, name_size, "host")) {
            host_count++;
            host_at = count + 1;
        } else if (name_is(name, name_size, "connection")) {
            is_conn[count / 2] = 1;
            conn_count++;
        } else if (plain && special_name(name, name_size))
            plain = 0;
        header_bytes += name_size + value_size + 4;
        starts[count] = name;
        sizes[count++] = name_size;
        starts[count] = value;
        sizes[count++] = value_size;
    }
    Py_ssize_t fields = count / 2;
    if (!plain)
        conn_count = 0; /* the session's per-field path takes every field, Connection too */
    PyObject *headers = PyList_New(fields - conn_count);
    if (headers == NULL)
        return NULL;
    PyObject *hop = NULL, *host = NULL, *block = NULL;
    if (plain) {
        hop = PyList_New(conn_count);
        if (hop == NULL)
            goto fail;
    }
    Py_ssize_t kept = 0, hopped = 0;
    for (Py_ssize_t i = 0; i < count; i += 2) {
        PyObject *name = PyBytes_FromStringAndSize(starts[i], sizes[i]);
        if (name == NULL)
            goto fail;
        PyObject *value = PyBytes_FromStringAndSize(starts[i + 1], sizes[i + 1]);
        if (value == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto fail;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        if (plain && is_conn[i / 2])
            PyList_SET_ITEM(hop, hopped++, pair);
        else
            PyList_SET_ITEM(headers, kept++, pair);
        if (i + 1 == host_at)
            host = value;
    }
    if (!plain || !as_written) {
        block = empty_bytes;
        Py_INCREF(block);
    } else if (conn_count == 0)
        block = PyBytes_FromStringAndSize(data + block_start, size - 2 - block_start);
    else {
        /* The lines but the Connection ones, copied in order. */
        Py_ssize_t total = size - 2 - block_start;
        const char *line = data + block_start;
        for (Py_ssize_t f = 0; f < fields; f++) {
            if (is_conn[f])
                total -= line_ends[f] - line;
            line = line_ends[f];
        }
        block = PyBytes_FromStringAndSize(NULL, total);
        if (block != NULL) {
            char *out = PyBytes_AS_STRING(block);
            line = data + block_start;
            for (Py_ssize_t f = 0; f < fields; f++) {
                if (!is_conn[f]) {
                    memcpy(out, line, (size_t)(line_ends[f] - line));
                    out += line_ends[f] - line;
                }
                line = line_ends[f];
            }
        }
    }
    if (block == NULL)
        goto fail;
    if (host == NULL)
        host = empty_bytes;
    PyObject *url_bytes = PyBytes_FromStringAndSize(url, url_size);
    if (url_bytes == NULL)
        goto fail_block;
    PyObject *result = PyTuple_New(9);
    if (result == NULL) {
        Py_DECREF(url_bytes);
        goto fail_block;
    }
    PyObject *counts[2] = {PyLong_FromSsize_t(host_count), PyLong_FromSsize_t(header_bytes)};
    if (counts[0] == NULL || counts[1] == NULL) {
        Py_XDECREF(counts[0]);
        Py_XDECREF(counts[1]);
        Py_DECREF(url_bytes);
        Py_DECREF(result);
        goto fail_block;
    }
    if (hop == NULL) {
        hop = Py_None;
        Py_INCREF(hop);
    }
    Py_INCREF(method);
    Py_INCREF(version);
    Py_INCREF(host);
    PyTuple_SET_ITEM(result, 0, method);
    PyTuple_SET_ITEM(result, 1, url_bytes);
    PyTuple_SET_ITEM(result, 2, version);
    PyTuple_SET_ITEM(result, 3, headers);
    PyTuple_SET_ITEM(result, 4, hop);
    PyTuple_SET_ITEM(result, 5, host);
    PyTuple_SET_ITEM(result, 6, counts[0]);
    PyTuple_SET_ITEM(result, 7, counts[1]);
    PyTuple_SET_ITEM(result, 8, block);
    return result;
fail_block:
    Py_DECREF(block);
fail:
    Py_DECREF(headers);
    Py_XDECREF(hop);
    return NULL;
}

static PyMethodDef methods[] = {
    {"parse_head", parse_head, METH_O, "One whole plain request head as (method, url, version, headers, hop, host, host_count, header_bytes, block), or None."},
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
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (!empty_bytes || !method_get || !method_head || !method_options || !method_delete || !version_11 || !version_10)
        return NULL;
    return PyModule_Create(&module);
}
