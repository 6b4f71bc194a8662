/* TLS on a client connection's descriptor, with OpenSSL called from here: the frontend's
 * contexts and each connection's state, for net/tls_transport.py.
 *
 * Python's `ssl` can do the same work, and does in a build without this module
 * (net/tls_channel.py), but not at the same cost: a full handshake always waits for the
 * client's Finished, and `ssl` reports that wait as an exception (SSLWantReadError, with
 * its message formatted: ~13,000 instructions); its connection object is made on a socket
 * object it refers to weakly and asks for its timeout at every call; it releases and takes
 * back the GIL around each OpenSSL call. Here "wait" is a value, the connection is made on
 * the descriptor, and the GIL is kept: the calls never block (the sockets are
 * non-blocking), and a worker runs one thread. Python's `ssl` also adopts no OpenSSL
 * object made elsewhere, so the context is made here too, from the same settings
 * (net/tls.py), with HAProxy's defaults where Python's differ:
 *
 * - SSL_MODE_NO_AUTO_CHAIN: the chain sent is the one in the certificate's file, as
 *   HAProxy's `crt`. Without it OpenSSL builds a chain from the context's store at every
 *   handshake whose certificate file holds no chain (a leaf alone): ~5,000 instructions for
 *   nothing, since a frontend's store holds at most the CA of client certificates.
 * - The context's options are Python's for a server (SSLContext(PROTOCOL_TLS_SERVER)): no
 *   SSLv2/3, no compression, the server's cipher order, a fresh key per exchange; plus no
 *   renegotiation, and a client that ends without close_notify is an end of stream to
 *   OpenSSL too (SSL_OP_IGNORE_UNEXPECTED_EOF; Python's channel reads its SSLEOFError as
 *   one: the same to the transport).
 *
 * ServerContext(cert, key, ciphers, suites, tls13_only, alpn, client_ca, verify, tickets=True,
 *               client_order=False) -> context
 *     `cert`: a PEM file holding the certificate and its chain (and the key when `key` is
 *     None); `ciphers`: OpenSSL's cipher list for TLS 1.2 (its DHE suites get RFC 7919's
 *     ffdhe2048); `suites`: the TLS 1.3 suites, in the server's order, except that a
 *     client that puts ChaCha20 first gets it (SSL_OP_PRIORITIZE_CHACHA: it has no AES
 *     instructions); `tls13_only`: refuse TLS 1.2; `alpn`: the protocols offered, in
 *     preference order (a tuple of str); `client_ca`: a PEM file of CAs for client
 *     certificates, or None; `verify`: 0 none, 1 optional, 2 required (ssl.CERT_*);
 *     `tickets`: False issues no stateless session tickets (SSL_OP_NO_TICKET: a session is
 *     resumed from this process's cache, by its id, or in TLS 1.3 by a ticket naming it);
 *     `client_order`: the client's preference picks the cipher and the TLS 1.3 suite
 *     (HAProxy's prefer-client-ciphers), not the server's order.
 *     `session_context`: the bytes (at most 32) a session is bound to: it resumes only on a
 *     context made with the same (OpenSSL's session id context). Contexts that share
 *     ticket keys or a session cache but not their policy (another frontend, or one that
 *     verifies client certificates differently) must differ here, or a session made on
 *     one would resume on the other without its checks.
 *     `session_cache`: a SessionCache (below) that keeps the sessions this context makes
 *     and resumes them, instead of OpenSSL's cache of this process; None: OpenSSL's.
 *     `ocsp`: a file holding the DER OCSP response to staple for the certificate (HAProxy's
 *     `CERT.ocsp`), sent to clients that ask (status_request), or None. Refused (ssl.SSLError
 *     naming it) unless it is a successful, signed response about this certificate (whose
 *     issuer must follow it in its file), saying "good", and not past its nextUpdate.
 *     `groups`: the key-exchange groups (OpenSSL's list, as "X25519:prime256v1"), or None
 *     for the process's (OPENSSL_CONF's Groups).
 *     `ticket_keys`: the keys of stateless session tickets, each of 48 bytes (a 16-byte
 *     name, an AES-128 key, an HMAC-SHA256 key of 16 bytes) or 80 (the name, an AES-256
 *     key, an HMAC key of 32 bytes), the layout of HAProxy's tls-ticket-keys and NGINX's
 *     ssl_session_ticket_key; `ticket_encrypt`: the index of the one that encrypts new
 *     tickets. Every key decrypts; a ticket under a key other than the encrypting one is
 *     renewed. Processes given the same keys resume each other's sessions (the workers
 *     of a master, the nodes behind one address). Empty: OpenSSL's own key, made at
 *     random for this context. Refused (ValueError): another size, an index out of range.
 *     Raises OSError (a file that cannot be read, with its errno) or ssl.SSLError
 *     (OpenSSL refused a setting or a file; an ALPN protocol not of 1 to 255 bytes).
 * Built against OpenSSL 3 (setup.py checks <openssl/opensslv.h>).
 * context.choose_by_name(contexts) -> None
 *     SNI: `contexts` (copied) maps lower-case names (and "*.suffix" wildcards, one label deep) to
 *     ServerContexts; a ClientHello whose name is found switches to that context, any
 *     other keeps this one.
 * Connection(context, fd) -> connection, or context.connection(fd)
 *     The server side of TLS on the connected, non-blocking descriptor `fd`, which stays
 *     the caller's: it is never closed here, and must stay open until `release()`.
 * connection.handshake() -> int
 *     0: done; 1: waits for the socket to be readable; 2: writable. Raises ssl.SSLError
 *     (its verify subclass for a refused client certificate) when the handshake failed,
 *     once OpenSSL has written the alert that tells the client why; OSError for a socket
 *     error; ssl.SSLEOFError when the client closed.
 * connection.read(size) -> bytes | None
 *     At most `size` (>= 1) bytes of plaintext (one record's at most); b"" at the client's end of
 *     stream (close_notify, or a close without it); None when nothing waits. Raises
 *     ssl.SSLWantWriteError when OpenSSL must write first (retry once writable), ssl.SSLError
 *     or OSError on a broken connection.
 * connection.write(data) -> int
 *     len(data) once OpenSSL took all of it (a buffer of any kind, not empty), 0 when the
 *     socket is full:
 *     retry later with the same bytes (they may move: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
 *     Raises as read.
 * connection.pending() -> int
 *     Decrypted bytes held by OpenSSL, which the socket will not signal.
 * connection.shutdown() -> None
 *     Sends close_notify, without waiting for the client's; errors are ignored (the
 *     connection is ending).
 * connection.release() -> None
 *     Frees OpenSSL's state: the caller is about to close the descriptor. Every call after
 *     it raises ValueError, but the information calls, which answer None.
 * connection.selected_alpn_protocol() -> str | None, version() -> str | None,
 * cipher() -> (name, protocol, secret bits) | None, compression() -> None,
 * peer_certificate() -> bytes | None (DER), context -> the ServerContext (SNI's choice)
 *     As Python's SSLObject has them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <openssl/dh.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HANDSHAKE_DONE 0
#define WANTS_READ 1
#define WANTS_WRITE 2

static PyObject *SSLError, *SSLEOFError, *SSLWantWriteError, *SSLCertVerificationError;

/* ---------------------------------------------------------------------------------------
 * Errors
 */

/* Raises the error OpenSSL queued for a failed call (`error`: SSL_get_error's answer,
 * `saved_errno`: errno right after the call), and empties the queue. NULL. */
static PyObject *raise_ssl_error(int error, int saved_errno) {
    unsigned long code = ERR_peek_last_error();
    if (error == SSL_ERROR_SYSCALL && code == 0) {
        ERR_clear_error();
        if (saved_errno != 0) {
            errno = saved_errno;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        PyErr_SetString(SSLEOFError, "EOF occurred in violation of protocol");
        return NULL;
    }
    if (error == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        PyErr_SetString(SSLEOFError, "TLS/SSL connection has been closed (EOF)");
        return NULL;
    }
    const char *reason = code ? ERR_reason_error_string(code) : NULL;
    if (reason == NULL)
        reason = "unknown error";
    /* Python's `ssl` names a reason by OpenSSL's mnemonic (UNSUPPORTED_PROTOCOL): its
     * text, upper case, with underscores, is that name for OpenSSL's own reasons. */
    char mnemonic[128];
    size_t length = 0;
    for (const char *at = reason; *at && length < sizeof(mnemonic) - 1; at++)
        mnemonic[length++] = (*at == ' ') ? '_' : (char)((*at >= 'a' && *at <= 'z') ? *at - 32 : *at);
    mnemonic[length] = '\0';
    int verify = ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED;
    ERR_clear_error();
    PyObject *type = verify ? SSLCertVerificationError : SSLError;
    PyObject *exc = PyObject_CallFunction(type, "is", error, reason);
    if (exc == NULL)
        return NULL;
    PyObject *name = PyUnicode_FromString(mnemonic);
    PyObject *library = PyUnicode_FromString("SSL");
    if (name != NULL && library != NULL && PyObject_SetAttrString(exc, "reason", name) == 0 &&
        PyObject_SetAttrString(exc, "library", library) == 0)
        PyErr_SetObject(type, exc);
    Py_XDECREF(name);
    Py_XDECREF(library);
    Py_DECREF(exc);
    return NULL;
}

/* An error from loading a file: OSError with its errno and file name when the system
 * refused it, else what OpenSSL said. NULL. */
/* Raises ssl.SSLError with `message` as its text: made as Python's `ssl` makes them, with
 * an error number first, so that str() gives the message (an SSLError of one argument
 * prints as that argument's tuple). Returns NULL. */
static PyObject *raise_ssl(const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    PyObject *message = PyUnicode_FromFormatV(format, arguments);
    va_end(arguments);
    if (message == NULL)
        return NULL;
    PyObject *error = PyObject_CallFunction(SSLError, "iO", 1, message);
    Py_DECREF(message);
    if (error != NULL) {
        PyErr_SetObject(SSLError, error);
        Py_DECREF(error);
    }
    return NULL;
}

static PyObject *raise_load_error(const char *what, const char *filename) {
    unsigned long code, last = 0;
    int system = 0;
    while ((code = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(code) == ERR_LIB_SYS)
            system = ERR_GET_REASON(code);
        last = code;
    }
    if (system != 0) {
        errno = system;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, filename);
    }
    const char *reason = last ? ERR_reason_error_string(last) : NULL;
    return raise_ssl("%s: %s", what, reason ? reason : "unknown error");
}

/* ---------------------------------------------------------------------------------------
 * ServerContext
 */

/* ---------------------------------------------------------------------------------------
 * SessionCache(memory) -> cache
 *     TLS sessions kept in `memory` (a writable buffer: the mapping of a memfd the master
 *     made and every worker maps, net/session_cache.py), so that a session one worker made
 *     resumes on any (TLS 1.2 session ids; TLS 1.3 tickets that only name a session, as
 *     made with tickets off). The memory is a header (CacheHeader: magic, slot size,
 *     slot count, a salt) then fixed slots (CacheSlot); a session id hashes (salted) to a
 *     set of CACHE_WAYS slots and takes the one holding it, else a free or expired one,
 *     else the one that expires first. A session whose DER encoding does not fit a slot (a
 *     client certificate in it, mostly) is not kept: its client makes a full handshake.
 *     Refuses (ValueError) memory whose header does not say this layout.
 *
 * Several processes write the slots without a lock: each slot has a sequence number, odd
 * while a writer holds it. A writer takes an even slot with a compare-and-swap (a slot
 * already held is skipped: the session is not kept, a cache's loss), writes, and makes it
 * even again; a reader copies a slot out, then reads the sequence again and uses the copy
 * only if it did not change (a seqlock). A worker killed mid-write leaves its slot odd:
 * one slot lost until the master's next cache.
 */

#define CACHE_MAGIC 0x43535442u /* "BTSC" */
#define CACHE_WAYS 4
#define CACHE_SLOT_SIZE 1024

typedef struct {
    uint32_t magic;
    uint32_t slot_size;
    uint32_t slots; /* a multiple of CACHE_WAYS */
    uint32_t unused;
    uint64_t salt;
    uint64_t reserved[5];
} CacheHeader;

typedef struct {
    uint32_t seq;
    uint32_t der_length;
    int64_t expires; /* seconds of the epoch; 0: free */
    uint32_t id_length;
    unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    unsigned char der[CACHE_SLOT_SIZE - 52];
} CacheSlot;

typedef struct {
    PyObject_HEAD Py_buffer memory;
    CacheHeader *header;
    CacheSlot *slots;
} SessionCache;

static PyTypeObject SessionCacheType;

static PyObject *SessionCache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *memory;
    if (!PyArg_ParseTuple(args, "O", &memory) || (kwargs != NULL && PyDict_Size(kwargs) != 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "SessionCache(memory) takes no keywords");
        return NULL;
    }
    SessionCache *self = (SessionCache *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(memory, &self->memory, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    CacheHeader *header = self->memory.buf;
    if ((size_t)self->memory.len < sizeof(CacheHeader) || header->magic != CACHE_MAGIC ||
        header->slot_size != sizeof(CacheSlot) || header->slots == 0 || header->slots % CACHE_WAYS != 0 ||
        (size_t)self->memory.len < sizeof(CacheHeader) + (size_t)header->slots * sizeof(CacheSlot)) {
        PyErr_SetString(PyExc_ValueError, "not a session cache of this layout");
        Py_DECREF(self);
        return NULL;
    }
    self->header = header;
    self->slots = (CacheSlot *)((char *)self->memory.buf + sizeof(CacheHeader));
    return (PyObject *)self;
}

static void SessionCache_dealloc(SessionCache *self) {
    if (self->memory.obj != NULL)
        PyBuffer_Release(&self->memory);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SessionCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "balancer.net._tls.SessionCache",
    .tp_basicsize = sizeof(SessionCache),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = SessionCache_new,
    .tp_dealloc = (destructor)SessionCache_dealloc,
    .tp_doc = "TLS sessions in memory shared by a master's workers: see _tls.c.",
};

/* The first slot of the set `id` hashes to (FNV-1a, salted). */
static CacheSlot *cache_set(SessionCache *cache, const unsigned char *id, unsigned int id_length) {
    uint64_t hash = 0xcbf29ce484222325ull ^ cache->header->salt;
    for (unsigned int i = 0; i < id_length; i++)
        hash = (hash ^ id[i]) * 0x100000001b3ull;
    uint32_t sets = cache->header->slots / CACHE_WAYS;
    return &cache->slots[(hash % sets) * CACHE_WAYS];
}

/* A slot of `id`'s set held for writing (its sequence made odd, `*seq` what it was), or
 * NULL when the one to write is held by another writer. */
static CacheSlot *cache_take(SessionCache *cache, const unsigned char *id, unsigned int id_length, uint32_t *seq) {
    CacheSlot *set = cache_set(cache, id, id_length);
    int64_t now = (int64_t)time(NULL);
    CacheSlot *chosen = NULL;
    for (int i = 0; i < CACHE_WAYS; i++) {
        CacheSlot *slot = &set[i];
        if (slot->id_length == id_length && memcmp(slot->id, id, id_length) == 0) {
            chosen = slot; /* its own: read without the lock, a wrong guess costs an entry */
            break;
        }
        if (chosen == NULL || (chosen->expires > now && slot->expires < chosen->expires))
            chosen = slot; /* free or expired first, else the one that expires first */
    }
    uint32_t before = __atomic_load_n(&chosen->seq, __ATOMIC_ACQUIRE);
    if ((before & 1) ||
        !__atomic_compare_exchange_n(&chosen->seq, &before, before + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return NULL;
    *seq = before;
    return chosen;
}

static void cache_give_back(CacheSlot *slot, uint32_t seq) { __atomic_store_n(&slot->seq, seq + 2, __ATOMIC_RELEASE); }

static SessionCache *cache_of(SSL_CTX *ctx);

/* OpenSSL made a session (SSL_CTX_sess_set_new_cb): kept when it fits. Returns 0: OpenSSL
 * keeps no reference for us. */
static int cache_new(SSL *ssl, SSL_SESSION *session) {
    SessionCache *cache = cache_of(SSL_get_SSL_CTX(ssl));
    unsigned int id_length;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_length);
    if (cache == NULL || id_length == 0 || id_length > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    int der_length = i2d_SSL_SESSION(session, NULL);
    if (der_length <= 0 || (size_t)der_length > sizeof(((CacheSlot *)0)->der))
        return 0;
    uint32_t seq;
    CacheSlot *slot = cache_take(cache, id, id_length, &seq);
    if (slot == NULL)
        return 0;
    unsigned char *der = slot->der;
    if (i2d_SSL_SESSION(session, &der) == der_length) {
        slot->id_length = id_length;
        memcpy(slot->id, id, id_length);
        slot->der_length = (uint32_t)der_length;
        slot->expires = (int64_t)SSL_SESSION_get_time(session) + (int64_t)SSL_SESSION_get_timeout(session);
    } else {
        slot->expires = 0;
        slot->id_length = 0;
    }
    cache_give_back(slot, seq);
    return 0;
}

/* A client names a session (SSL_CTX_sess_set_get_cb): a copy of it, or NULL. */
static SSL_SESSION *cache_get(SSL *ssl, const unsigned char *id, int id_length, int *copy) {
    *copy = 0; /* the session returned is the caller's */
    SessionCache *cache = cache_of(SSL_get_SSL_CTX(ssl));
    if (cache == NULL || id_length <= 0 || id_length > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return NULL;
    CacheSlot *set = cache_set(cache, id, (unsigned int)id_length);
    unsigned char der[sizeof(((CacheSlot *)0)->der)];
    for (int i = 0; i < CACHE_WAYS; i++) {
        CacheSlot *slot = &set[i];
        uint32_t seq = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
        if ((seq & 1) || slot->id_length != (uint32_t)id_length || memcmp(slot->id, id, (size_t)id_length) != 0)
            continue;
        uint32_t der_length = slot->der_length;
        int64_t expires = slot->expires;
        if (der_length == 0 || der_length > sizeof(der))
            continue;
        memcpy(der, slot->der, der_length);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&slot->seq, __ATOMIC_RELAXED) != seq)
            continue; /* written meanwhile: a miss */
        if (expires <= (int64_t)time(NULL))
            return NULL;
        const unsigned char *p = der;
        return d2i_SSL_SESSION(NULL, &p, (long)der_length);
    }
    return NULL;
}

/* OpenSSL drops a session (SSL_CTX_sess_set_remove_cb): one it found expired, or whose
 * connection ended in an error. (No early data is accepted, so a TLS 1.3 session is not
 * dropped for replay protection once used.) */
static void cache_remove(SSL_CTX *ctx, SSL_SESSION *session) {
    SessionCache *cache = cache_of(ctx);
    unsigned int id_length;
    const unsigned char *id = SSL_SESSION_get_id(session, &id_length);
    if (cache == NULL || id_length == 0 || id_length > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return;
    CacheSlot *set = cache_set(cache, id, id_length);
    for (int i = 0; i < CACHE_WAYS; i++) {
        CacheSlot *slot = &set[i];
        if (slot->id_length != id_length || memcmp(slot->id, id, id_length) != 0)
            continue;
        uint32_t seq = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
        if (!(seq & 1) &&
            __atomic_compare_exchange_n(&slot->seq, &seq, seq + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            if (slot->id_length == id_length && memcmp(slot->id, id, id_length) == 0) {
                slot->expires = 0;
                slot->id_length = 0;
            }
            cache_give_back(slot, seq);
        }
        return;
    }
}

/* A session ticket key: HAProxy's and NGINX's layout, 48 or 80 bytes. */
#define TICKET_NAME 16
typedef struct {
    unsigned char name[TICKET_NAME];
    unsigned char aes[32];
    unsigned char hmac[32];
    int size; /* of the AES and HMAC keys: 16 or 32 */
} TicketKey;

typedef struct {
    PyObject_HEAD SSL_CTX *ctx;
    unsigned char *alpn; /* the offered protocols in wire format (length-prefixed), or NULL */
    unsigned int alpn_length;
    PyObject *by_name;   /* dict: lower-case name -> ServerContext, or NULL */
    TicketKey *tickets;  /* ticket_count keys, or NULL: OpenSSL's own */
    int ticket_count;
    int ticket_encrypt;  /* the index of the key that encrypts */
    SessionCache *cache; /* or NULL: OpenSSL's own, in this process */
    unsigned char *ocsp; /* the DER OCSP response stapled, or NULL */
    int ocsp_length;
} ServerContext;

/* The ServerContext of an SSL_CTX, for the ticket key and session cache callbacks. */
static int context_index = -1;

static ServerContext *context_of(SSL_CTX *ctx) { return SSL_CTX_get_ex_data(ctx, context_index); }

static SessionCache *cache_of(SSL_CTX *ctx) {
    ServerContext *context = context_of(ctx);
    return context != NULL ? context->cache : NULL;
}

static PyTypeObject ServerContextType;

/* A connection holds the contexts its SSL object uses, whose callbacks get them as their
 * argument: the one it was made with (its SNI callback's) and the one SNI chose, if another
 * (its ALPN callback's), so neither is freed while the connection lives. */
typedef struct {
    PyObject_HEAD SSL *ssl; /* NULL once released */
    ServerContext *context; /* made with */
    ServerContext *chosen;  /* chosen by SNI, or NULL */
} Connection;

/* The server's preference wins (as Python's `ssl` and HAProxy choose); no protocol in
 * common goes on without ALPN, as Python's does. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_length, const unsigned char *offered,
                       unsigned int offered_length, void *arg) {
    (void)ssl;
    ServerContext *self = (ServerContext *)arg;
    if (self->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *chosen;
    if (SSL_select_next_proto(&chosen, out_length, self->alpn, self->alpn_length, offered, offered_length) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

/* SNI: the context of the name the client asked for, else the default (no alert). Runs
 * inside SSL_do_handshake, with the GIL held (see Connection.handshake). */
static int choose_context(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    ServerContext *self = (ServerContext *)arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || self->by_name == NULL)
        return SSL_TLSEXT_ERR_OK;
    char lower[256];
    size_t length = strlen(name);
    if (length == 0 || length >= sizeof(lower) - 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i <= length; i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    PyObject *key = PyUnicode_DecodeASCII(lower, (Py_ssize_t)length, NULL);
    PyObject *found = key ? PyDict_GetItemWithError(self->by_name, key) : NULL;
    Py_XDECREF(key);
    if (found == NULL && !PyErr_Occurred()) {
        const char *dot = strchr(lower, '.');
        if (dot != NULL) {
            char wildcard[sizeof(lower) + 1];
            wildcard[0] = '*';
            memcpy(wildcard + 1, dot, strlen(dot) + 1);
            key = PyUnicode_DecodeASCII(wildcard, (Py_ssize_t)strlen(wildcard), NULL);
            found = key ? PyDict_GetItemWithError(self->by_name, key) : NULL;
            Py_XDECREF(key);
        }
    }
    PyErr_Clear(); /* a name that is not ASCII is no configured name */
    Connection *connection = SSL_get_app_data(ssl);
    if (found != NULL && Py_IS_TYPE(found, &ServerContextType) && found != (PyObject *)self && connection != NULL) {
        Py_INCREF(found);
        Py_XSETREF(connection->chosen, (ServerContext *)found);
        SSL_set_SSL_CTX(ssl, ((ServerContext *)found)->ctx);
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Stateless tickets under the context's keys (SSL_CTX_set_tlsext_ticket_key_evp_cb): the
 * encrypting key's name, a random IV, AES-CBC and HMAC-SHA256 as OpenSSL's own keys use.
 * Decrypting: 0 for a name no key has (the client makes a full handshake), 2 for a key
 * that no longer encrypts (the session resumes and gets a new ticket), -1 on an error. */
static int ticket_key(SSL *ssl, unsigned char key_name[TICKET_NAME], unsigned char *iv, EVP_CIPHER_CTX *cipher,
                      EVP_MAC_CTX *mac, int encrypt) {
    ServerContext *self = context_of(SSL_get_SSL_CTX(ssl));
    if (self == NULL || self->ticket_count == 0)
        return -1;
    const TicketKey *key = NULL;
    int found = 1;
    if (encrypt) {
        key = &self->tickets[self->ticket_encrypt];
        if (RAND_bytes(iv, 16) != 1) /* AES-CBC's block */
            return -1;
        memcpy(key_name, key->name, TICKET_NAME);
    } else {
        for (int i = 0; i < self->ticket_count; i++) {
            if (memcmp(self->tickets[i].name, key_name, TICKET_NAME) == 0) {
                key = &self->tickets[i];
                found = i == self->ticket_encrypt ? 1 : 2;
                break;
            }
        }
        if (key == NULL)
            return 0;
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac, (size_t)key->size),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    const EVP_CIPHER *type = key->size == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
    if (EVP_MAC_CTX_set_params(mac, params) != 1 ||
        EVP_CipherInit_ex(cipher, type, NULL, key->aes, iv, encrypt ? 1 : 0) != 1)
        return -1;
    return found;
}

/* The ticket keys of ServerContext(ticket_keys=, ticket_encrypt=): see the top. */
static int set_tickets(ServerContext *self, PyObject *keys, int encrypt) {
    Py_ssize_t count = PyTuple_GET_SIZE(keys);
    if (count == 0)
        return 0;
    if (count > 64 || encrypt < 0 || encrypt >= count) {
        PyErr_SetString(PyExc_ValueError, "ticket_encrypt must index ticket_keys (at most 64 keys)");
        return -1;
    }
    self->tickets = PyMem_Calloc((size_t)count, sizeof(TicketKey));
    if (self->tickets == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->ticket_count = (int)count; /* cleansed at dealloc however far the copy goes */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(keys, i);
        if (!PyBytes_Check(item) || (PyBytes_GET_SIZE(item) != 48 && PyBytes_GET_SIZE(item) != 80)) {
            PyErr_SetString(PyExc_ValueError, "a ticket key is 48 or 80 bytes");
            return -1;
        }
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(item);
        TicketKey *key = &self->tickets[i];
        key->size = PyBytes_GET_SIZE(item) == 48 ? 16 : 32;
        memcpy(key->name, data, TICKET_NAME);
        memcpy(key->aes, data + TICKET_NAME, (size_t)key->size);
        memcpy(key->hmac, data + TICKET_NAME + key->size, (size_t)key->size);
    }
    self->ticket_encrypt = encrypt;
    if (!SSL_CTX_set_tlsext_ticket_key_evp_cb(self->ctx, ticket_key)) {
        raise_load_error("cannot set the session ticket keys", NULL);
        return -1;
    }
    return 0;
}

/* A client asked for the certificate's status (status_request): the context's OCSP
 * response, stapled (OpenSSL frees the copy). Runs with the GIL held, inside SSL_do_handshake. */
static int staple_ocsp(SSL *ssl, void *arg) {
    ServerContext *self = (ServerContext *)arg;
    if (self->ocsp == NULL || SSL_get_tlsext_status_type(ssl) != TLSEXT_STATUSTYPE_ocsp)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_malloc((size_t)self->ocsp_length);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, self->ocsp, (size_t)self->ocsp_length);
    if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, self->ocsp_length)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* The OCSP response of ServerContext(ocsp=): see the top. Returns -1 with an exception set. */
static int set_ocsp(ServerContext *self, const char *file) {
    const char *problem = NULL;
    OCSP_RESPONSE *response = NULL;
    OCSP_BASICRESP *basic = NULL;
    OCSP_CERTID *id = NULL;
    BIO *bio = BIO_new_file(file, "rb");
    if (bio == NULL) {
        raise_load_error("cannot read the OCSP response", file);
        return -1;
    }
    response = d2i_OCSP_RESPONSE_bio(bio, NULL);
    BIO_free(bio);
    X509 *leaf = SSL_CTX_get0_certificate(self->ctx);
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(self->ctx, &chain);
    X509 *issuer = NULL;
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK) {
            issuer = sk_X509_value(chain, i);
            break;
        }
    }
    int status = -1, reason;
    ASN1_GENERALIZEDTIME *revoked, *this_update, *next_update;
    if (response == NULL || OCSP_response_status(response) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        (basic = OCSP_response_get1_basic(response)) == NULL)
        problem = "not a successful OCSP response";
    else if (issuer == NULL)
        problem = "the certificate's file holds no issuer to check it against (put the chain after the certificate)";
    else if ((id = OCSP_cert_to_id(NULL, leaf, issuer)) == NULL ||
             !OCSP_resp_find_status(basic, id, &status, &reason, &revoked, &this_update, &next_update))
        problem = "not about this certificate";
    else if (OCSP_basic_verify(basic, chain, NULL, OCSP_TRUSTOTHER | OCSP_NOVERIFY) != 1)
        problem = "its signature does not verify";
    else if (status != V_OCSP_CERTSTATUS_GOOD)
        problem = status == V_OCSP_CERTSTATUS_REVOKED ? "it says the certificate is revoked"
                                                      : "it says the certificate's status is unknown";
    else if (!OCSP_check_validity(this_update, next_update, 300, -1))
        problem = "out of date (past its nextUpdate): fetch a new one";
    int length = problem == NULL ? i2d_OCSP_RESPONSE(response, &self->ocsp) : 0;
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(response);
    ERR_clear_error();
    if (problem == NULL && length <= 0)
        problem = "cannot encode the OCSP response";
    if (problem != NULL) {
        raise_ssl("%s: %s", file, problem);
        return -1;
    }
    self->ocsp_length = length;
    SSL_CTX_set_tlsext_status_cb(self->ctx, staple_ocsp);
    SSL_CTX_set_tlsext_status_arg(self->ctx, self);
    return 0;
}

static int set_alpn(ServerContext *self, PyObject *protocols) {
    Py_ssize_t count = PyTuple_GET_SIZE(protocols);
    if (count == 0)
        return 0;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size;
        if (!PyUnicode_Check(PyTuple_GET_ITEM(protocols, i)) ||
            PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(protocols, i), &size) == NULL || size == 0 || size > 255) {
            if (!PyErr_Occurred())
                raise_ssl("an ALPN protocol is 1 to 255 bytes");
            return -1;
        }
        total += 1 + (size_t)size;
    }
    self->alpn = PyMem_Malloc(total);
    if (self->alpn == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    unsigned char *at = self->alpn;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(protocols, i), &size);
        *at++ = (unsigned char)size;
        memcpy(at, text, (size_t)size);
        at += size;
    }
    self->alpn_length = (unsigned int)total;
    SSL_CTX_set_alpn_select_cb(self->ctx, select_alpn, self);
    return 0;
}

/* RFC 7919's ffdhe2048 for the TLS 1.2 DHE suites, as Mozilla's intermediate profile and
 * HAProxy's default (net/tls.py loads the same group into Python's ssl): without a group
 * OpenSSL never chooses a DHE suite. 1 on success. */
static int set_ffdhe2048(SSL_CTX *ctx) {
    EVP_PKEY *group = NULL;
    EVP_PKEY_CTX *make = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    int ok = make != NULL && EVP_PKEY_paramgen_init(make) == 1 && EVP_PKEY_CTX_set_dh_nid(make, NID_ffdhe2048) == 1 &&
             EVP_PKEY_paramgen(make, &group) == 1 && SSL_CTX_set0_tmp_dh_pkey(ctx, group) == 1;
    if (!ok)
        EVP_PKEY_free(group); /* set0 took it only on success */
    EVP_PKEY_CTX_free(make);
    return ok;
}

static PyObject *ServerContext_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"cert",      "key",    "ciphers", "suites", "tls13_only", "alpn",
                                "client_ca", "verify", "tickets", "client_order", "ticket_keys",
                                "ticket_encrypt", "groups", "session_context", "session_cache", "ocsp", NULL};
    const char *cert, *key, *client_ca, *ciphers, *suites, *groups = NULL, *ocsp = NULL;
    Py_buffer session_context = {0};
    PyObject *alpn, *ticket_keys = NULL, *session_cache = Py_None;
    int tls13_only, verify, tickets = 1, client_order = 0, ticket_encrypt = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "szsspO!zi|ppO!izy*Oz", keywords, &cert, &key, &ciphers,
                                     &suites, &tls13_only, &PyTuple_Type, &alpn, &client_ca, &verify, &tickets,
                                     &client_order, &PyTuple_Type, &ticket_keys, &ticket_encrypt, &groups,
                                     &session_context, &session_cache, &ocsp))
        return NULL;
    ServerContext *self = (ServerContext *)type->tp_alloc(type, 0);
    PyObject *result = NULL;
    if (self == NULL)
        goto done;
    ERR_clear_error();
    self->ctx = SSL_CTX_new(TLS_server_method());
    if (self->ctx == NULL) {
        raise_load_error("cannot make a TLS context", NULL);
        goto done;
    }
    SSL_CTX *ctx = self->ctx;
    SSL_CTX_set_options(ctx, (SSL_OP_ALL & ~SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS) | SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 |
                                 SSL_OP_NO_COMPRESSION | (client_order ? 0 : SSL_OP_CIPHER_SERVER_PREFERENCE) |
                                 SSL_OP_SINGLE_DH_USE |
                                 SSL_OP_SINGLE_ECDH_USE | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_PRIORITIZE_CHACHA | (tickets ? 0 : SSL_OP_NO_TICKET));
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY |
                              SSL_MODE_NO_AUTO_CHAIN);
    /* Resumption needs a session id context once client certificates are verified, and
     * binds a session to the contexts that share it (see the top). */
    static const unsigned char default_context[] = "balancer";
    if (session_context.buf != NULL && session_context.len > SSL_MAX_SID_CTX_LENGTH) {
        PyErr_SetString(PyExc_ValueError, "session_context is at most 32 bytes");
        goto done;
    }
    if (session_context.buf != NULL && session_context.len > 0)
        SSL_CTX_set_session_id_context(ctx, session_context.buf, (unsigned int)session_context.len);
    else
        SSL_CTX_set_session_id_context(ctx, default_context, sizeof(default_context) - 1);
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_TRUSTED_FIRST);
    if (!SSL_CTX_set_min_proto_version(ctx, tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION)) {
        raise_load_error("cannot set the TLS version", NULL);
        goto done;
    }
    if (!SSL_CTX_set_cipher_list(ctx, ciphers) || !SSL_CTX_set_ciphersuites(ctx, suites)) {
        ERR_clear_error();
        raise_ssl("No cipher can be selected.");
        goto done;
    }
    if (groups != NULL && !SSL_CTX_set1_groups_list(ctx, groups)) {
        ERR_clear_error();
        raise_ssl("unknown key-exchange group in %s", groups);
        goto done;
    }
    if (!set_ffdhe2048(ctx)) {
        raise_load_error("cannot set the DHE group", NULL);
        goto done;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        raise_load_error("cannot load the certificate", cert);
        goto done;
    }
    const char *key_file = key != NULL ? key : cert;
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        raise_load_error("cannot load the private key", key_file);
        goto done;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        raise_load_error("the private key does not match the certificate", key_file);
        goto done;
    }
    if (set_alpn(self, alpn) < 0)
        goto done;
    if (ocsp != NULL && set_ocsp(self, ocsp) < 0)
        goto done;
    if (!SSL_CTX_set_ex_data(ctx, context_index, self)) {
        raise_load_error("cannot set the context's data", NULL);
        goto done;
    }
    if (tickets && ticket_keys != NULL && set_tickets(self, ticket_keys, ticket_encrypt) < 0)
        goto done;
    if (session_cache != Py_None) {
        if (!Py_IS_TYPE(session_cache, &SessionCacheType)) {
            PyErr_SetString(PyExc_TypeError, "session_cache must be a SessionCache or None");
            goto done;
        }
        Py_INCREF(session_cache);
        self->cache = (SessionCache *)session_cache;
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, cache_new);
        SSL_CTX_sess_set_get_cb(ctx, cache_get);
        SSL_CTX_sess_set_remove_cb(ctx, cache_remove);
    }
    if (verify != 0) {
        if (client_ca == NULL) {
            raise_ssl("verifying client certificates needs client_ca");
            goto done;
        }
        if (SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
            raise_load_error("cannot load the client CA", client_ca);
            goto done;
        }
        SSL_CTX_set_verify(ctx, verify == 2 ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                           NULL);
    }
    result = (PyObject *)self;
    self = NULL;
done:
    Py_XDECREF(self);
    if (session_context.buf != NULL)
        PyBuffer_Release(&session_context);
    return result;
}

static PyObject *ServerContext_choose_by_name(ServerContext *self, PyObject *contexts) {
    if (!PyDict_Check(contexts)) {
        PyErr_SetString(PyExc_TypeError, "choose_by_name takes a dict");
        return NULL;
    }
    PyObject *copy = PyDict_Copy(contexts); /* a caller's later changes free nothing in use */
    if (copy == NULL)
        return NULL;
    Py_XSETREF(self->by_name, copy);
    SSL_CTX_set_tlsext_servername_callback(self->ctx, choose_context);
    SSL_CTX_set_tlsext_servername_arg(self->ctx, self);
    Py_RETURN_NONE;
}

static int ServerContext_traverse(ServerContext *self, visitproc visit, void *arg) {
    Py_VISIT(self->by_name);
    return 0;
}

/* The cache is neither visited nor cleared: it refers to no Python object that could lead
 * back here (no cycle), and the callbacks may use it until the context is freed. */
static int ServerContext_clear(ServerContext *self) {
    Py_CLEAR(self->by_name);
    return 0;
}

static void ServerContext_dealloc(ServerContext *self) {
    PyObject_GC_UnTrack(self);
    ServerContext_clear(self);
    if (self->ctx != NULL)
        SSL_CTX_free(self->ctx); /* connections still made on it hold references of their own */
    Py_XDECREF(self->cache);
    OPENSSL_free(self->ocsp);
    PyMem_Free(self->alpn);
    if (self->tickets != NULL) {
        OPENSSL_cleanse(self->tickets, sizeof(TicketKey) * (size_t)self->ticket_count);
        PyMem_Free(self->tickets);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ServerContext_connection(ServerContext *self, PyObject *fd_object);

static PyMethodDef ServerContext_methods[] = {
    {"choose_by_name", (PyCFunction)ServerContext_choose_by_name, METH_O, "choose_by_name(contexts): see _tls.c."},
    {"connection", (PyCFunction)ServerContext_connection, METH_O, "connection(fd): see _tls.c."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ServerContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "balancer.net._tls.ServerContext",
    .tp_basicsize = sizeof(ServerContext),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = ServerContext_new,
    .tp_dealloc = (destructor)ServerContext_dealloc,
    .tp_traverse = (traverseproc)ServerContext_traverse,
    .tp_clear = (inquiry)ServerContext_clear,
    .tp_methods = ServerContext_methods,
    .tp_doc = "A frontend's TLS context: see _tls.c.",
};

/* ---------------------------------------------------------------------------------------
 * Connection
 */

static PyObject *released(void) {
    PyErr_SetString(PyExc_ValueError, "the TLS connection was released");
    return NULL;
}

static PyTypeObject ConnectionType;

static PyObject *new_connection(PyTypeObject *type, ServerContext *context, int fd) {
    Connection *self = (Connection *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    ERR_clear_error();
    self->ssl = SSL_new(context->ctx);
    if (self->ssl == NULL || SSL_set_fd(self->ssl, fd) != 1) {
        Py_DECREF(self);
        return raise_load_error("cannot start TLS", NULL);
    }
    SSL_set_accept_state(self->ssl);
    SSL_set_app_data(self->ssl, self); /* for the SNI callback; cleared as the SSL object goes */
    Py_INCREF(context);
    self->context = context;
    return (PyObject *)self;
}

static PyObject *Connection_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    ServerContext *context;
    int fd;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Connection takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!i", &ServerContextType, &context, &fd))
        return NULL;
    return new_connection(type, context, fd);
}

/* context.connection(fd): Connection(context, fd) without packing and parsing a tuple of
 * arguments (each accepted connection makes one). */
static PyObject *ServerContext_connection(ServerContext *self, PyObject *fd_object) {
    long fd = PyLong_AsLong(fd_object);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a descriptor");
        return NULL;
    }
    return new_connection(&ConnectionType, self, (int)fd);
}

static void Connection_dealloc(Connection *self) {
    if (self->ssl != NULL)
        SSL_free(self->ssl);
    Py_XDECREF(self->context);
    Py_XDECREF(self->chosen);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Connection_handshake(Connection *self, PyObject *unused) {
    if (self->ssl == NULL)
        return released();
    ERR_clear_error();
    errno = 0;
    int done = SSL_do_handshake(self->ssl);
    int saved_errno = errno;
    if (done == 1)
        return PyLong_FromLong(HANDSHAKE_DONE);
    int error = SSL_get_error(self->ssl, done);
    if (error == SSL_ERROR_WANT_READ)
        return PyLong_FromLong(WANTS_READ);
    if (error == SSL_ERROR_WANT_WRITE)
        return PyLong_FromLong(WANTS_WRITE);
    return raise_ssl_error(error, saved_errno);
}

/* One record's plaintext at most per SSL_read: a buffer of that size serves every read
 * (the GIL is held from the read to the copy). */
static char read_buffer[SSL3_RT_MAX_PLAIN_LENGTH];

static PyObject *Connection_read(Connection *self, PyObject *size_object) {
    if (self->ssl == NULL)
        return released();
    Py_ssize_t size = PyLong_AsSsize_t(size_object);
    if (size < 1) { /* 0 would read nothing, and b"" means the end of the stream */
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "size must be positive");
        return NULL;
    }
    if (size > (Py_ssize_t)sizeof(read_buffer))
        size = (Py_ssize_t)sizeof(read_buffer);
    ERR_clear_error();
    errno = 0;
    int count = SSL_read(self->ssl, read_buffer, (int)size);
    int saved_errno = errno;
    if (count > 0)
        return PyBytes_FromStringAndSize(read_buffer, count);
    int error = SSL_get_error(self->ssl, count);
    switch (error) {
    case SSL_ERROR_WANT_READ:
        Py_RETURN_NONE;
    case SSL_ERROR_ZERO_RETURN:
        return PyBytes_FromStringAndSize(NULL, 0);
    case SSL_ERROR_WANT_WRITE:
        PyErr_SetString(SSLWantWriteError, "The operation did not complete (write)");
        return NULL;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0 && saved_errno == 0) { /* a close without close_notify */
            return PyBytes_FromStringAndSize(NULL, 0);
        }
        /* fall through */
    default:
        return raise_ssl_error(error, saved_errno);
    }
}

static PyObject *Connection_write(Connection *self, PyObject *data) {
    if (self->ssl == NULL)
        return released();
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len == 0 || view.len > INT_MAX) { /* 0: "the socket is full" would mean retry */
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "write 1 byte to 2 GiB at a time");
        return NULL;
    }
    ERR_clear_error();
    errno = 0;
    int count = SSL_write(self->ssl, view.buf, (int)view.len);
    int saved_errno = errno;
    PyBuffer_Release(&view);
    if (count > 0)
        return PyLong_FromLong(count);
    int error = SSL_get_error(self->ssl, count);
    if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ)
        return PyLong_FromLong(0);
    return raise_ssl_error(error, saved_errno);
}

static PyObject *Connection_pending(Connection *self, PyObject *unused) {
    return PyLong_FromLong(self->ssl != NULL ? SSL_pending(self->ssl) : 0);
}

static PyObject *Connection_shutdown(Connection *self, PyObject *unused) {
    if (self->ssl == NULL)
        return released();
    ERR_clear_error();
    SSL_shutdown(self->ssl);
    ERR_clear_error();
    Py_RETURN_NONE;
}

static PyObject *Connection_release(Connection *self, PyObject *unused) {
    if (self->ssl != NULL) {
        SSL_free(self->ssl);
        self->ssl = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Connection_selected_alpn_protocol(Connection *self, PyObject *unused) {
    const unsigned char *protocol = NULL;
    unsigned int length = 0;
    if (self->ssl != NULL)
        SSL_get0_alpn_selected(self->ssl, &protocol, &length);
    if (protocol == NULL || length == 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeASCII((const char *)protocol, length, "replace");
}

static PyObject *Connection_version(Connection *self, PyObject *unused) {
    if (self->ssl == NULL || !SSL_is_init_finished(self->ssl))
        Py_RETURN_NONE;
    return PyUnicode_FromString(SSL_get_version(self->ssl));
}

static PyObject *Connection_cipher(Connection *self, PyObject *unused) {
    const SSL_CIPHER *cipher = self->ssl != NULL ? SSL_get_current_cipher(self->ssl) : NULL;
    if (cipher == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(ssi)", SSL_CIPHER_get_name(cipher), SSL_CIPHER_get_version(cipher),
                         SSL_CIPHER_get_bits(cipher, NULL));
}

/* Whether the handshake resumed a session (a ticket or a cached session) rather than make one. */
static PyObject *Connection_session_reused(Connection *self, PyObject *unused) {
    (void)unused;
    if (self->ssl == NULL)
        return released();
    return PyBool_FromLong(SSL_session_reused(self->ssl));
}

static PyObject *Connection_compression(Connection *self, PyObject *unused) {
    Py_RETURN_NONE; /* SSL_OP_NO_COMPRESSION: never any */
}

static PyObject *Connection_peer_certificate(Connection *self, PyObject *unused) {
    X509 *certificate = self->ssl != NULL ? SSL_get1_peer_certificate(self->ssl) : NULL;
    if (certificate == NULL)
        Py_RETURN_NONE;
    unsigned char *der = NULL;
    int length = i2d_X509(certificate, &der);
    X509_free(certificate);
    if (length < 0) {
        ERR_clear_error();
        Py_RETURN_NONE;
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)der, length);
    OPENSSL_free(der);
    return result;
}

static PyObject *Connection_get_context(Connection *self, void *closure) {
    ServerContext *context = self->chosen != NULL ? self->chosen : self->context;
    Py_INCREF(context);
    return (PyObject *)context;
}

static PyMethodDef Connection_methods[] = {
    {"handshake", (PyCFunction)Connection_handshake, METH_NOARGS, "handshake(): see _tls.c."},
    {"read", (PyCFunction)Connection_read, METH_O, "read(size): see _tls.c."},
    {"write", (PyCFunction)Connection_write, METH_O, "write(data): see _tls.c."},
    {"pending", (PyCFunction)Connection_pending, METH_NOARGS, "pending(): see _tls.c."},
    {"shutdown", (PyCFunction)Connection_shutdown, METH_NOARGS, "shutdown(): see _tls.c."},
    {"release", (PyCFunction)Connection_release, METH_NOARGS, "release(): see _tls.c."},
    {"selected_alpn_protocol", (PyCFunction)Connection_selected_alpn_protocol, METH_NOARGS, NULL},
    {"version", (PyCFunction)Connection_version, METH_NOARGS, NULL},
    {"cipher", (PyCFunction)Connection_cipher, METH_NOARGS, NULL},
    {"compression", (PyCFunction)Connection_compression, METH_NOARGS, NULL},
    {"session_reused", (PyCFunction)Connection_session_reused, METH_NOARGS, NULL},
    {"peer_certificate", (PyCFunction)Connection_peer_certificate, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Connection_getset[] = {
    {"context", (getter)Connection_get_context, NULL, "the ServerContext in use (SNI's choice)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ConnectionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "balancer.net._tls.Connection",
    .tp_basicsize = sizeof(Connection),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Connection_new,
    .tp_dealloc = (destructor)Connection_dealloc,
    .tp_methods = Connection_methods,
    .tp_getset = Connection_getset,
    .tp_doc = "TLS on a client connection's descriptor: see _tls.c.",
};

/* ---------------------------------------------------------------------------------------
 * Module
 */

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tls", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__tls(void) {
    PyObject *ssl = PyImport_ImportModule("ssl");
    if (ssl == NULL)
        return NULL;
    SSLError = PyObject_GetAttrString(ssl, "SSLError");
    SSLEOFError = PyObject_GetAttrString(ssl, "SSLEOFError");
    SSLWantWriteError = PyObject_GetAttrString(ssl, "SSLWantWriteError");
    SSLCertVerificationError = PyObject_GetAttrString(ssl, "SSLCertVerificationError");
    Py_DECREF(ssl);
    if (!SSLError || !SSLEOFError || !SSLWantWriteError || !SSLCertVerificationError)
        return NULL;
    if (PyType_Ready(&ServerContextType) < 0 || PyType_Ready(&ConnectionType) < 0 ||
        PyType_Ready(&SessionCacheType) < 0)
        return NULL;
    context_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (context_index < 0) {
        PyErr_SetString(PyExc_ImportError, "no SSL_CTX ex_data index for the ticket keys");
        return NULL;
    }
    PyObject *self = PyModule_Create(&module);
    if (self == NULL)
        return NULL;
    Py_INCREF(&ServerContextType);
    Py_INCREF(&ConnectionType);
    Py_INCREF(&SessionCacheType);
    if (PyModule_AddObject(self, "ServerContext", (PyObject *)&ServerContextType) < 0 ||
        PyModule_AddObject(self, "SessionCache", (PyObject *)&SessionCacheType) < 0 ||
        PyModule_AddIntConstant(self, "CACHE_SLOT_SIZE", (long)sizeof(CacheSlot)) < 0 ||
        PyModule_AddIntConstant(self, "CACHE_HEADER_SIZE", (long)sizeof(CacheHeader)) < 0 ||
        PyModule_AddIntConstant(self, "CACHE_WAYS", CACHE_WAYS) < 0 ||
        PyModule_AddIntConstant(self, "CACHE_MAGIC", (long)CACHE_MAGIC) < 0 ||
        PyModule_AddObject(self, "Connection", (PyObject *)&ConnectionType) < 0 ||
        PyModule_AddIntConstant(self, "HANDSHAKE_DONE", HANDSHAKE_DONE) < 0 ||
        PyModule_AddIntConstant(self, "WANTS_READ", WANTS_READ) < 0 ||
        PyModule_AddIntConstant(self, "WANTS_WRITE", WANTS_WRITE) < 0 ||
        PyModule_AddStringConstant(self, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}
