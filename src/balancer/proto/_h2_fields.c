/* An HTTP/1.1 response head's fields for an HTTP/2 client, in one C call
 * (net/h2_stream.py; proto/h2_message.py holds the Python reference of each function).
 *
 * response_block(status, lines) -> bytes
 *     The HPACK header block (RFC 7541) of the header list h2_message.response_headers
 *     makes of the same arguments: `lines` is the response's header lines as the upstream
 *     keeps them, CRLF between them (empty lines skipped); :status first, then per line
 *     its name (up to the first colon, the whole line without one) in lower case and its
 *     value (after that colon, b"" without one) without spaces and tabs at either end; a
 *     field HTTP/2 must not carry (connection-specific, RFC 9113 8.2.2) is dropped.
 *     Encoded without the dynamic table, as HAProxy encodes what it sends: :status indexed
 *     when the static table has it, each field a literal "without indexing" (set-cookie,
 *     cookie and the authorization fields "never indexed") naming its static-table name
 *     when there is one; raw strings, no Huffman. So a block depends on nothing but its
 *     arguments, and the connection's encoder (proto/hpack_codec) is left as it is: only a
 *     table size update it owes the client goes before the block (h2_connection).
 * response_trailers(lines) -> list[tuple[bytes, bytes]]
 *     The fields of a trailer section as h2_message.response_trailers gives them: the same
 *     reading, dropping also what a trailer section must not carry (framing, routing and
 *     Trailer fields, and any name starting with a colon).
 * put_frame(out, kind, flags, stream_id, payload) -> None
 *     Appends one frame (RFC 9113 4.1) to the bytearray `out`: its 9-byte head (the
 *     payload's length, `kind`, `flags`, `stream_id` without its reserved bit) then
 *     `payload` (bytes), in one resize. Refuses a payload past 2^24 - 1 bytes (no frame
 *     can carry it) and values out of their fields' ranges (ValueError); the caller cuts
 *     payloads to the client's frame size (h2_connection).
 *
 * Why in C: per response, the Python reference makes ~16 method calls (split, partition,
 * lower, strip per line) and the encoder a dict lookup per field; here one pass.
 *
 * Bounds: every scan stops at the end of `lines`; a name is lowered into NAME_BUFFER bytes
 * on the stack only when it fits (a longer one is no name checked here); the block is written into a buffer sized for the worst
 * case of its lines (block_bound), then cut to what was written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define NAME_BUFFER 64

static PyObject *empty_bytes;

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

/* The trailer field name `name` lower-cased, as a new reference; NULL with *dropped set
 * when the field is not to be sent, NULL with an exception on failure. */
static PyObject *trailer_name(const char *name, Py_ssize_t size, int *dropped) {
    *dropped = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *lowered = PyBytes_AS_STRING(out);
    lower_into(lowered, name, size);
    if (connection_specific(lowered, size) || not_trailer(lowered, size)) {
        Py_DECREF(out);
        *dropped = 1;
        return NULL;
    }
    return out;
}

/* One field of a head: where its name and value are in `lines`. */
typedef struct {
    const char *name, *value;
    Py_ssize_t name_size, value_size;
} Field;

/* The next line of lines[*at..end) with a field in it (empty lines skipped): 1 and *field
 * filled, *at moved past it; 0 at the end. A line ends at the next CRLF (a lone CR or LF
 * stays in the line, as bytes.split(b"\r\n") does). */
static int next_field(const char **at, const char *end, Field *field) {
    const char *p = *at;
    while (p < end) {
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
        const char *value = colon != NULL ? colon + 1 : eol, *value_end = eol;
        while (value < value_end && (*value == ' ' || *value == '\t'))
            value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
            value_end--;
        field->name = p;
        field->name_size = (colon != NULL ? colon : eol) - p;
        field->value = value;
        field->value_size = value_end - value;
        *at = next;
        return 1;
    }
    *at = end;
    return 0;
}

/* Append the trailer fields of `lines` to `list`; 0, or -1 with an exception. */
static int add_trailers(PyObject *list, PyObject *lines) {
    const char *p = PyBytes_AS_STRING(lines), *end = p + PyBytes_GET_SIZE(lines);
    Field field;
    while (next_field(&p, end, &field)) {
        int dropped;
        PyObject *name = trailer_name(field.name, field.name_size, &dropped);
        if (name == NULL) {
            if (dropped)
                continue;
            return -1;
        }
        PyObject *value = field.value_size ? PyBytes_FromStringAndSize(field.value, field.value_size) : empty_bytes;
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        if (value == empty_bytes)
            Py_INCREF(value);
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            return -1;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        int failed = PyList_Append(list, pair);
        Py_DECREF(pair);
        if (failed)
            return -1;
    }
    return 0;
}

/* RFC 7541 Appendix A: the static table's names, index i + 1 at i (:status 8 is 200). */
static const char *const STATIC_NAMES[61] = {
    ":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status", ":status",
    ":status", ":status", ":status", ":status", ":status", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "accept", "access-control-allow-origin", "age", "allow",
    "authorization", "cache-control", "content-disposition", "content-encoding", "content-language",
    "content-length", "content-location", "content-range", "content-type", "cookie", "date", "etag",
    "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range",
    "if-unmodified-since", "last-modified", "link", "location", "max-forwards", "proxy-authenticate",
    "proxy-authorization", "range", "referer", "refresh", "retry-after", "server", "set-cookie",
    "strict-transport-security", "transfer-encoding", "user-agent", "vary", "via", "www-authenticate",
};

static Py_ssize_t static_sizes[61]; /* strlen of each, at import */
/* The names past the pseudo-header fields by first letter ('a' has the most: 9), at
 * import: a name is compared with those of its letter only, not with all 47 (a fifth of
 * the instructions of a response block went to that scan). */
#define SAME_LETTER_MAX 16
static unsigned char by_letter[26][SAME_LETTER_MAX];
static int by_letter_count[26];

/* The static index of name `lower` (lower case), 0 when the table has no such name. */
static int static_name_index(const char *lower, Py_ssize_t size) {
    if (size == 0 || lower[0] < 'a' || lower[0] > 'z')
        return 0;
    int letter = lower[0] - 'a';
    for (int k = 0; k < by_letter_count[letter]; k++) {
        int i = by_letter[letter][k];
        if (static_sizes[i] == size && memcmp(lower, STATIC_NAMES[i], (size_t)size) == 0)
            return i + 1;
    }
    return 0;
}

/* An HPACK integer (RFC 7541 5.1): `first` holds the representation's bits above a prefix
 * of `bits` bits; at most 6 bytes for a Py_ssize_t that fits a string length here. */
static char *put_int(char *out, unsigned char first, int bits, Py_ssize_t value) {
    Py_ssize_t max = (1 << bits) - 1;
    if (value < max) {
        *out++ = (char)(first | value);
        return out;
    }
    *out++ = (char)(first | max);
    value -= max;
    while (value >= 128) {
        *out++ = (char)(0x80 | (value & 0x7F));
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

static char *put_string(char *out, const char *data, Py_ssize_t size) {
    out = put_int(out, 0x00, 7, size); /* H = 0: raw */
    memcpy(out, data, (size_t)size);
    return out + size;
}

/* The most a block of `lines` can take: per line its bytes and at most 16 more (one byte
 * of representation, three integers of up to 5 bytes each); a line is at least 1 byte. */
static Py_ssize_t block_bound(const char *p, Py_ssize_t size) {
    Py_ssize_t lines = 1;
    const char *end = p + size;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return size + 16 * lines + 32; /* and :status (a literal of up to 20 digits) */
}

static const int STATUS_INDEX[][2] = {{200, 8}, {204, 9}, {206, 10}, {304, 11}, {400, 12}, {404, 13}, {500, 14}};

static PyObject *response_block(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "response_block(status: int, lines: bytes)");
        return NULL;
    }
    long status = PyLong_AsLong(args[0]);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    const char *p = PyBytes_AS_STRING(args[1]), *end = p + PyBytes_GET_SIZE(args[1]);
    PyObject *block = PyBytes_FromStringAndSize(NULL, block_bound(p, end - p));
    if (block == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(block);
    int indexed = 0;
    for (size_t i = 0; i < sizeof(STATUS_INDEX) / sizeof(STATUS_INDEX[0]); i++)
        if (STATUS_INDEX[i][0] == status)
            indexed = STATUS_INDEX[i][1];
    if (indexed)
        *out++ = (char)(0x80 | indexed);
    else {
        char digits[24];
        int n = snprintf(digits, sizeof digits, "%ld", status);
        *out++ = 0x08; /* without indexing, name :status (8) */
        out = put_string(out, digits, n);
    }
    Field field;
    char lowered[NAME_BUFFER];
    while (next_field(&p, end, &field)) {
        const char *name = field.name;
        Py_ssize_t size = field.name_size;
        int index = 0;
        if (size <= NAME_BUFFER) {
            lower_into(lowered, name, size);
            if (connection_specific(lowered, size))
                continue;
            name = lowered;
            index = static_name_index(lowered, size);
        }
        /* Never indexed (0001xxxx) for secrets, as proto/hpack_codec's _NEVER_INDEXED. */
        unsigned char kind = (is(name, size, "set-cookie") || is(name, size, "cookie") ||
                              is(name, size, "authorization") || is(name, size, "proxy-authorization"))
                                 ? 0x10
                                 : 0x00;
        if (index)
            out = put_int(out, kind, 4, index);
        else {
            *out++ = (char)kind;
            out = put_int(out, 0x00, 7, size);
            if (name == lowered)
                memcpy(out, lowered, (size_t)size);
            else
                lower_into(out, name, size); /* a long name: lowered in place */
            out += size;
        }
        out = put_string(out, field.value, field.value_size);
    }
    if (_PyBytes_Resize(&block, out - PyBytes_AS_STRING(block)) < 0)
        return NULL;
    return block;
}

static PyObject *response_trailers(PyObject *self, PyObject *lines) {
    (void)self;
    if (!PyBytes_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "response_trailers(lines: bytes)");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list != NULL && add_trailers(list, lines) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *put_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyByteArray_Check(args[0]) || !PyBytes_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "put_frame(out: bytearray, kind, flags, stream_id, payload: bytes)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[1]), flags = PyLong_AsLong(args[2]), stream_id = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[4]);
    if (kind < 0 || kind > 255 || flags < 0 || flags > 255 || stream_id < 0 || stream_id > 0x7FFFFFFFL || size > 0xFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "put_frame: a field out of its range");
        return NULL;
    }
    PyObject *out = args[0];
    Py_ssize_t start = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, start + 9 + size) < 0)
        return NULL;
    unsigned char *at = (unsigned char *)PyByteArray_AS_STRING(out) + start;
    at[0] = (unsigned char)(size >> 16);
    at[1] = (unsigned char)(size >> 8);
    at[2] = (unsigned char)size;
    at[3] = (unsigned char)kind;
    at[4] = (unsigned char)flags;
    at[5] = (unsigned char)(stream_id >> 24);
    at[6] = (unsigned char)(stream_id >> 16);
    at[7] = (unsigned char)(stream_id >> 8);
    at[8] = (unsigned char)stream_id;
    memcpy(at + 9, PyBytes_AS_STRING(args[4]), (size_t)size);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"response_block", (PyCFunction)(void (*)(void))response_block, METH_FASTCALL,
     "The HPACK block of an HTTP/1.1 response head's fields, without the dynamic table."},
    {"response_trailers", response_trailers, METH_O,
     "The HTTP/2 trailer fields of an HTTP/1.1 trailer section (h2_message.response_trailers)."},
    {"put_frame", (PyCFunction)(void (*)(void))put_frame, METH_FASTCALL,
     "Append one HTTP/2 frame (head and payload) to a bytearray."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_h2_fields", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__h2_fields(void) {
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    if (empty_bytes == NULL)
        return NULL;
    for (int i = 0; i < 61; i++)
        static_sizes[i] = (Py_ssize_t)strlen(STATIC_NAMES[i]);
    for (int i = 14; i < 61; i++) { /* past the pseudo-header fields: all start with a-z */
        int letter = STATIC_NAMES[i][0] - 'a';
        if (by_letter_count[letter] == SAME_LETTER_MAX) {
            PyErr_SetString(PyExc_ImportError, "_h2_fields: SAME_LETTER_MAX too small");
            return NULL;
        }
        by_letter[letter][by_letter_count[letter]++] = (unsigned char)i;
    }
    return PyModule_Create(&module);
}
