/* A strict parser of one whole HTTP/1.x request head, in one call (net/http_session.py).
 *
 * parse_head(data) -> (method, url, version, headers, hop, host, host_count, header_bytes,
 *                       block, fields) | None
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
 *         With a block, `headers` is None: the fields are in the block (proto/http1.py
 *         block_fields reads them back when a rule, a hash or a cookie asks);
 *       - fields: how many header fields the head has, Connection ones included.
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
 *
 * http2_head(headers) -> the same tuple | None
 *     `headers` is an HTTP/2 request's header list as proto.h2_connection gives it (a list of
 *     (name, value) bytes tuples, pseudo-header fields first), from a HEADERS frame that
 *     ended the stream (no body). The result is what parse_head returns for the HTTP/1.1 head
 *     proto.h2_message.request_head writes for that list (but `headers`, always a list here:
 *     the stream's pairs are made already): Host from :authority (or the last
 *     host field) first, the other fields in order, cookie fields joined with "; " last; so an
 *     HTTP/2 stream hands its session the parsed head (net/h2_stream.py) without the head
 *     being written out and parsed again. None for anything request_head would refuse or
 *     parse_head would not return (the stream then takes that path, which answers it as
 *     before): a pseudo-header field missing, repeated, unknown (:protocol too) or after a
 *     regular field; a method other than GET, HEAD, OPTIONS or DELETE; a :path that is not an
 *     origin-form target of the bytes above; a name that is not a lower-case token or is
 *     connection-specific (TE too), Host and Connection aside one the session treats apart
 *     (special_name) or leaves to httptools (refused_name); a value that is empty, begins or
 *     ends with a space or tab, or holds a CTL but HTAB, DEL or a non-ASCII byte (:scheme
 *     too); an authority (or host) with a space or tab; more than MAX_FIELDS fields.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_FIELDS 100

static PyObject *method_get, *method_head, *method_options, *method_delete;
static PyObject *version_11, *version_10, *empty_bytes, *name_host, *name_cookie;

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
    /* A head forwarded as received (its block) gets no field list: the request makes it
     * from the block if a rule, a hash or a cookie asks (most never do), and a head of ten
     * fields saves thirty objects made and freed. */
    int lazy = plain && as_written;
    PyObject *headers = NULL, *hop = NULL, *host = NULL, *block = NULL, *url_bytes = NULL;
    PyObject *counts[3] = {NULL, NULL, NULL}, *result = NULL;
    if (lazy) {
        headers = Py_None;
        Py_INCREF(headers);
    } else if ((headers = PyList_New(fields - conn_count)) == NULL)
        return NULL;
    if (plain && (hop = PyList_New(conn_count)) == NULL)
        goto fail;
    Py_ssize_t kept = 0, hopped = 0;
    for (Py_ssize_t i = 0; i < count; i += 2) {
        int to_hop = plain && is_conn[i / 2];
        if (lazy && !to_hop) {
            if (i + 1 == host_at && (host = PyBytes_FromStringAndSize(starts[i + 1], sizes[i + 1])) == NULL)
                goto fail;
            continue;
        }
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
        if (to_hop)
            PyList_SET_ITEM(hop, hopped++, pair);
        else
            PyList_SET_ITEM(headers, kept++, pair);
        if (i + 1 == host_at) {
            host = value;
            Py_INCREF(host);
        }
    }
    if (!lazy) {
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
    if (host == NULL) {
        host = empty_bytes;
        Py_INCREF(host);
    }
    if (hop == NULL) {
        hop = Py_None;
        Py_INCREF(hop);
    }
    url_bytes = PyBytes_FromStringAndSize(url, url_size);
    counts[0] = PyLong_FromSsize_t(host_count);
    counts[1] = PyLong_FromSsize_t(header_bytes);
    counts[2] = PyLong_FromSsize_t(fields);
    if (url_bytes == NULL || counts[0] == NULL || counts[1] == NULL || counts[2] == NULL ||
        (result = PyTuple_New(10)) == NULL)
        goto fail;
    Py_INCREF(method);
    Py_INCREF(version);
    /* The references made above go into the tuple. */
    PyObject *items[10] = {method, url_bytes, version, headers, hop, host, counts[0], counts[1], block, counts[2]};
    for (int i = 0; i < 10; i++)
        PyTuple_SET_ITEM(result, i, items[i]);
    return result;
fail:
    Py_XDECREF(headers);
    Py_XDECREF(hop);
    Py_XDECREF(host);
    Py_XDECREF(block);
    Py_XDECREF(url_bytes);
    for (int i = 0; i < 3; i++)
        Py_XDECREF(counts[i]);
    return NULL;
}

/* A value parse_head would return as written: not empty, no space or tab at either end,
 * only VCHAR, SP and HTAB. */
static int plain_value(const char *value, Py_ssize_t size) {
    if (size == 0 || value[0] == ' ' || value[0] == '\t' || value[size - 1] == ' ' || value[size - 1] == '\t')
        return 0;
    for (Py_ssize_t i = 0; i < size; i++)
        if (!is_value[(unsigned char)value[i]])
            return 0;
    return 1;
}

/* An HTTP/2 field name request_head forwards (a lower-case token, not connection-specific)
 * that the session forwards as it is (neither special_name nor refused_name); "host" and
 * "cookie" are taken apart before this. */
static int plain_http2_name(const char *name, Py_ssize_t size) {
    if (size == 0)
        return 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!is_tchar[c] || (c >= 'A' && c <= 'Z'))
            return 0;
    }
    /* special_name holds TE, Keep-Alive and Proxy-Connection, refused_name Upgrade and
     * Transfer-Encoding: with Connection, every connection-specific name. */
    return !(special_name(name, size) || refused_name(name, size) || name_is(name, size, "connection"));
}

static PyObject *http2_head(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyList_CheckExact(arg))
        Py_RETURN_NONE;
    Py_ssize_t count = PyList_GET_SIZE(arg);
    if (count > MAX_FIELDS + 4) /* the four pseudo-header fields and MAX_FIELDS lines */
        Py_RETURN_NONE;
    PyObject *method = NULL, *path = NULL, *authority = NULL, *host = NULL;
    int scheme = 0;
    /* The fields forwarded as they are (indices into `arg`), and the cookie values. */
    Py_ssize_t kept[MAX_FIELDS + 4], cookies[MAX_FIELDS + 4];
    Py_ssize_t kept_count = 0, cookie_count = 0, cookie_bytes = 0;
    int regular = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(arg, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            Py_RETURN_NONE;
        PyObject *name_obj = PyTuple_GET_ITEM(pair, 0), *value_obj = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_CheckExact(name_obj) || !PyBytes_CheckExact(value_obj))
            Py_RETURN_NONE;
        const char *name = PyBytes_AS_STRING(name_obj);
        Py_ssize_t name_size = PyBytes_GET_SIZE(name_obj);
        const char *value = PyBytes_AS_STRING(value_obj);
        Py_ssize_t value_size = PyBytes_GET_SIZE(value_obj);
        if (name_size > 0 && name[0] == ':') {
            PyObject **slot;
            if (regular)
                Py_RETURN_NONE;
            if (name_size == 7 && memcmp(name, ":method", 7) == 0)
                slot = &method;
            else if (name_size == 5 && memcmp(name, ":path", 5) == 0)
                slot = &path;
            else if (name_size == 10 && memcmp(name, ":authority", 10) == 0)
                slot = &authority;
            else if (name_size == 7 && memcmp(name, ":scheme", 7) == 0) {
                if (scheme || !plain_value(value, value_size))
                    Py_RETURN_NONE;
                scheme = 1;
                continue;
            } else
                Py_RETURN_NONE; /* :protocol, or unknown */
            if (*slot != NULL)
                Py_RETURN_NONE;
            *slot = value_obj;
            continue;
        }
        regular = 1;
        if (!plain_value(value, value_size))
            Py_RETURN_NONE;
        if (name_size == 4 && memcmp(name, "host", 4) == 0)
            host = value_obj;
        else if (name_size == 6 && memcmp(name, "cookie", 6) == 0) {
            cookies[cookie_count++] = i;
            cookie_bytes += value_size;
        } else if (plain_http2_name(name, name_size))
            kept[kept_count++] = i;
        else
            Py_RETURN_NONE;
    }
    if (method == NULL || path == NULL || !scheme)
        Py_RETURN_NONE;
    const char *m = PyBytes_AS_STRING(method);
    Py_ssize_t m_size = PyBytes_GET_SIZE(method);
    if (m_size == 3 && memcmp(m, "GET", 3) == 0)
        method = method_get;
    else if (m_size == 4 && memcmp(m, "HEAD", 4) == 0)
        method = method_head;
    else if (m_size == 7 && memcmp(m, "OPTIONS", 7) == 0)
        method = method_options;
    else if (m_size == 6 && memcmp(m, "DELETE", 6) == 0)
        method = method_delete;
    else
        Py_RETURN_NONE;
    const char *target = PyBytes_AS_STRING(path);
    Py_ssize_t target_size = PyBytes_GET_SIZE(path);
    if (target_size == 0 || target[0] != '/')
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < target_size; i++)
        if (!is_target[(unsigned char)target[i]])
            Py_RETURN_NONE;
    if (authority != NULL && PyBytes_GET_SIZE(authority) == 0)
        authority = NULL; /* request_head: an empty :authority gives way to a host field */
    if (authority == NULL)
        authority = host;
    if (authority != NULL) {
        /* Plain (a host field's value was checked above, an :authority's is here), and no
         * space or tab inside either: request_head refuses those. */
        const char *a = PyBytes_AS_STRING(authority);
        Py_ssize_t a_size = PyBytes_GET_SIZE(authority);
        if (!plain_value(a, a_size) || memchr(a, ' ', (size_t)a_size) || memchr(a, '\t', (size_t)a_size))
            Py_RETURN_NONE;
    }
    Py_ssize_t lines = kept_count + (authority != NULL) + (cookie_count > 0);
    if (lines > MAX_FIELDS)
        Py_RETURN_NONE;

    /* The header lines as request_head writes them ("name: value" CRLF): Host, the kept
     * fields, the cookie line. */
    Py_ssize_t header_bytes = 0;
    if (authority != NULL)
        header_bytes += 4 + PyBytes_GET_SIZE(authority) + 4;
    for (Py_ssize_t k = 0; k < kept_count; k++) {
        PyObject *pair = PyList_GET_ITEM(arg, kept[k]);
        header_bytes += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) + PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)) + 4;
    }
    if (cookie_count > 0)
        header_bytes += 6 + cookie_bytes + 2 * (cookie_count - 1) + 4;

    PyObject *headers = PyList_New(lines), *hop = NULL, *block = NULL, *cookie = NULL, *result = NULL;
    if (headers == NULL)
        return NULL;
    Py_ssize_t at = 0;
    if (authority != NULL) {
        PyObject *pair = PyTuple_Pack(2, name_host, authority);
        if (pair == NULL)
            goto fail;
        PyList_SET_ITEM(headers, at++, pair);
    }
    for (Py_ssize_t k = 0; k < kept_count; k++) {
        PyObject *pair = PyList_GET_ITEM(arg, kept[k]);
        Py_INCREF(pair);
        PyList_SET_ITEM(headers, at++, pair);
    }
    if (cookie_count == 1) {
        cookie = PyTuple_GET_ITEM(PyList_GET_ITEM(arg, cookies[0]), 1);
        Py_INCREF(cookie);
    } else if (cookie_count > 1) {
        cookie = PyBytes_FromStringAndSize(NULL, cookie_bytes + 2 * (cookie_count - 1));
        if (cookie == NULL)
            goto fail;
        char *out = PyBytes_AS_STRING(cookie);
        for (Py_ssize_t c = 0; c < cookie_count; c++) {
            PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(arg, cookies[c]), 1);
            if (c > 0) {
                memcpy(out, "; ", 2);
                out += 2;
            }
            memcpy(out, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
            out += PyBytes_GET_SIZE(value);
        }
    }
    if (cookie != NULL) {
        PyObject *pair = PyTuple_Pack(2, name_cookie, cookie);
        if (pair == NULL)
            goto fail;
        PyList_SET_ITEM(headers, at++, pair);
    }
    /* Every line is `name: value` CRLF, 4 bytes beside its name and value: header_bytes long. */
    block = PyBytes_FromStringAndSize(NULL, header_bytes);
    if (block == NULL)
        goto fail;
    char *out = PyBytes_AS_STRING(block);
    for (Py_ssize_t h = 0; h < lines; h++) {
        PyObject *pair = PyList_GET_ITEM(headers, h);
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        memcpy(out, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        out += PyBytes_GET_SIZE(name);
        memcpy(out, ": ", 2);
        out += 2;
        memcpy(out, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        out += PyBytes_GET_SIZE(value);
        memcpy(out, "\r\n", 2);
        out += 2;
    }
    hop = PyList_New(0);
    if (hop == NULL)
        goto fail;
    /* The tuple made by hand: Py_BuildValue reads its format string on every call (~1k
     * instructions, more than the rest of this function's bookkeeping). */
    PyObject *host_count = PyLong_FromSsize_t(authority != NULL), *size = PyLong_FromSsize_t(header_bytes);
    PyObject *fields = PyLong_FromSsize_t(lines);
    result = host_count != NULL && size != NULL && fields != NULL ? PyTuple_New(10) : NULL;
    if (result == NULL) {
        Py_XDECREF(host_count);
        Py_XDECREF(size);
        Py_XDECREF(fields);
        goto fail;
    }
    PyObject *borrowed[6] = {method, path, version_11, headers, hop, authority != NULL ? authority : empty_bytes};
    for (int i = 0; i < 6; i++) {
        Py_INCREF(borrowed[i]);
        PyTuple_SET_ITEM(result, i, borrowed[i]);
    }
    PyTuple_SET_ITEM(result, 6, host_count);
    PyTuple_SET_ITEM(result, 7, size);
    Py_INCREF(block);
    PyTuple_SET_ITEM(result, 8, block);
    PyTuple_SET_ITEM(result, 9, fields);
fail:
    Py_DECREF(headers);
    Py_XDECREF(hop);
    Py_XDECREF(block);
    Py_XDECREF(cookie);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_head", parse_head, METH_O, "One whole plain request head as (method, url, version, headers, hop, host, host_count, header_bytes, block), or None."},
    {"http2_head", http2_head, METH_O, "An HTTP/2 request's header list (no body) as parse_head reads the HTTP/1.1 head written for it, or None."},
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
    name_host = PyBytes_FromString("host");
    name_cookie = PyBytes_FromString("cookie");
    if (!empty_bytes || !name_host || !name_cookie || !method_get || !method_head || !method_options || !method_delete || !version_11 || !version_10)
        return NULL;
    return PyModule_Create(&module);
}
