/* The socket calls of our own transports, on a descriptor, never waiting: "nothing now"
 * is an answer, not an exception, and the GIL is kept.
 *
 * CPython's socket methods raise BlockingIOError when a non-blocking call finds nothing to
 * do: an OSError made with its errno and its message (decoded from the C library's
 * strerror), then caught, about 9,500 instructions where the system call is a few hundred.
 * Nearly every connection paid that twice: at the end of the accept loop (the queue is
 * empty) and in the lingering close's look for bytes the client sent unasked (net.linger;
 * there are none). Each of its reads and writes also released and took back the GIL, as
 * calls that may block must, and every accepted connection became a socket object, made
 * with a getsockname to check the descriptor. HAProxy pays the system calls alone. These
 * calls never block (MSG_DONTWAIT, and the sockets are non-blocking), so they keep the GIL.
 * net/socket_calls.py uses this module when it is built, os and socket otherwise
 * (BALANCER_PURE=1).
 *
 * Errors other than "nothing now" raise OSError with their errno (its subclass: a reset
 * raises ConnectionResetError), as the socket methods do. An interrupted call is retried.
 *
 * accept(fd) -> (fd, address) | None
 *     accept4 on the listening descriptor `fd`; the new descriptor is close-on-exec and
 *     non-blocking (its TCP options are the listening socket's: Linux copies them to each
 *     connection, TCP_NODELAY included, see net/acceptor.py). None when no connection
 *     waits. `address` is what socket.accept gives: (host, port) for AF_INET,
 *     (host, port, flowinfo, scope_id) for AF_INET6, the path for AF_UNIX ('' for an
 *     unnamed client, bytes for an abstract one); None for another family.
 * recv(fd, size) -> bytes | None
 *     At most `size` bytes; b"" at the peer's end of stream, None when nothing waits.
 * recv_into(fd, buffer) -> int | None
 *     Into the writable `buffer`: how many bytes (0 at the end of stream), None as recv.
 * bytes_of(buffer, size) -> bytes
 *     The first `size` bytes of `buffer`, copied out: a read's bytes out of the buffer it
 *     filled (the loop's reads into net/upstream.py's buffer). memoryview slicing and
 *     tobytes() make a view, a slice and a method call: ~1,200 instructions per read, ~200
 *     here. ValueError when `size` is negative or beyond the buffer.
 * send(fd, data, more=False) -> int
 *     How many bytes of `data` (any buffer) the kernel took: 0 when it took none. With
 *     `more` (MSG_MORE) the kernel holds a last part smaller than a segment for what comes
 *     next: the end of stream of a close or shutdown that follows at once then leaves in
 *     the same segment as the data, not in one of its own (see net/plain_transport.py).
 * shutdown_write(fd) -> None
 *     The end of stream to the peer (shutdown SHUT_WR).
 * getsockname(fd) -> address
 *     The local address, in accept's form.
 * close(fd) -> None
 *     Closes the descriptor, keeping the GIL (os.close releases and takes it back: a
 *     mutex pair per connection). A socket's close never waits without SO_LINGER, which
 *     these sockets do not set. An EINTR is not retried: the descriptor is gone anyway.
 * drain(fd) -> int
 *     Reads and discards what waits, at most DRAIN_READS reads of DRAIN_SIZE bytes: how many
 *     bytes (0: nothing waited), or -1 once the stream is over (the peer's end of stream,
 *     or an error: a reset); the caller then closes the socket.
 *
 * connect(host, port) -> (fd, connected)
 *     A non-blocking, close-on-exec TCP socket with TCP_NODELAY, connecting to the numeric
 *     IPv4 or IPv6 address `host` (str; ValueError when it is not one) and `port`:
 *     `connected` is True when the connect completed at once, False when it goes on (the
 *     socket turns writable once it ends; socket_error then says how). A connect that is
 *     under way after the first call is asked once more: on loopback and near servers the
 *     handshake has ended by then, and the waits for it (an epoll_ctl in and out of the
 *     writable set, a pass, SO_ERROR) are saved. A connect refused at once closes the
 *     socket and raises.
 * socket_error(fd) -> int
 *     The socket's pending error (SO_ERROR): 0, or the errno of a failed connect.
 *
 * The epoll sets of net/poller.py, with the GIL kept (a zero timeout never waits;
 * select.epoll releases and retakes it at each call):
 * epoll_create() -> int
 *     A new epoll descriptor, close-on-exec.
 * epoll_watch(epfd, fd, writable) -> None
 *     Adds `fd` to the set, for reading, or for writing when `writable` (level-triggered).
 * epoll_forget(epfd, fd) -> None
 *     Removes `fd` from the set; nothing if it is not there (closed meanwhile).
 * epoll_ready(epfd, max) -> tuple[int, ...]
 *     The descriptors of the set ready now (or in error), at most `max` (<= 256); ().
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NOW (MSG_DONTWAIT | MSG_NOSIGNAL)

/* A tuple of `count` new references, which it takes, also when it fails (NULL when any of
 * them is NULL, as when making one failed). Made by hand: Py_BuildValue reads its format
 * string on every call, ~500 instructions of each accepted connection's. */
static PyObject *tuple_of(Py_ssize_t count, PyObject **items) {
    PyObject *tuple = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (items[i] == NULL)
            goto fail;
    }
    tuple = PyTuple_New(count);
    if (tuple == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < count; i++)
        PyTuple_SET_ITEM(tuple, i, items[i]);
    return tuple;
fail:
    for (Py_ssize_t i = 0; i < count; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* An IPv4 address in dotted decimal, as inet_ntop writes it, into `out` (at least 16
 * bytes); its length. By hand: glibc's inet_ntop formats it with sprintf, ~1.7k
 * instructions of each accepted connection's ~70k. */
static Py_ssize_t ipv4_text(const struct in_addr *address, char *out) {
    const unsigned char *octets = (const unsigned char *)&address->s_addr; /* network order */
    char *at = out;
    for (int i = 0; i < 4; i++) {
        unsigned int octet = octets[i];
        if (octet >= 100)
            *at++ = (char)('0' + octet / 100);
        if (octet >= 10)
            *at++ = (char)('0' + octet / 10 % 10);
        *at++ = (char)('0' + octet % 10);
        if (i < 3)
            *at++ = '.';
    }
    return at - out;
}

static PyObject *address(const struct sockaddr_storage *storage, socklen_t length) {
    char host[INET6_ADDRSTRLEN];
    switch (storage->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)storage;
        PyObject *items[2] = {PyUnicode_FromStringAndSize(host, ipv4_text(&in->sin_addr, host)),
                              PyLong_FromLong(ntohs(in->sin_port))};
        return tuple_of(2, items);
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)storage;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        PyObject *items[4] = {PyUnicode_FromString(host), PyLong_FromLong(ntohs(in6->sin6_port)),
                              PyLong_FromUnsignedLong(ntohl(in6->sin6_flowinfo)),
                              PyLong_FromUnsignedLong(in6->sin6_scope_id)};
        return tuple_of(4, items);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)storage;
        Py_ssize_t size = (Py_ssize_t)length - (Py_ssize_t)offsetof(struct sockaddr_un, sun_path);
        if (size <= 0)
            return PyUnicode_FromStringAndSize("", 0);
        if (un->sun_path[0] == '\0')  // Linux's abstract namespace: the name is bytes
            return PyBytes_FromStringAndSize(un->sun_path, size);
        return PyUnicode_DecodeFSDefaultAndSize(un->sun_path, (Py_ssize_t)strnlen(un->sun_path, (size_t)size));
    }
    default:
        Py_RETURN_NONE;
    }
}

static int descriptor(PyObject *argument, int *fd) {
    long value = PyLong_AsLong(argument);
    if (value == -1 && PyErr_Occurred())
        return -1;
    *fd = (int)value;
    return 0;
}

static int nothing_now(void) { return errno == EAGAIN || errno == EWOULDBLOCK; }

static PyObject *accept_connection(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int listening, fd;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "accept(fd)");
        return NULL;
    }
    if (descriptor(args[0], &listening) < 0)
        return NULL;
    struct sockaddr_storage storage;
    socklen_t length;
    do {
        length = sizeof(storage);
        fd = accept4(listening, (struct sockaddr *)&storage, &length, SOCK_CLOEXEC | SOCK_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (nothing_now())
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *peer = address(&storage, length);
    if (peer == NULL) {
        close(fd);
        return NULL;
    }
    PyObject *items[2] = {PyLong_FromLong(fd), peer};
    PyObject *result = tuple_of(2, items);
    if (result == NULL)
        close(fd);
    return result;
}

/* Reads of at most SCRATCH_SIZE bytes land here and are copied into a bytes object of the
 * size read: a request head of a few hundred bytes then costs a small allocation, where a
 * bytes object of the full size asked, shrunk after the read, cost a large malloc and a
 * realloc (~600 instructions), and one more when nothing waited. Larger reads (an L4 relay's
 * 256 KiB) are made into their own object, not copied. The GIL is held throughout: one
 * buffer serves every call. */
enum { SCRATCH_SIZE = 65536 };
static char scratch[SCRATCH_SIZE];

static PyObject *recv_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv(fd, size)");
        return NULL;
    }
    if (descriptor(args[0], &fd) < 0)
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    PyObject *data = NULL;  // the bytes read into, for a read larger than the scratch buffer
    char *into = scratch;
    if (size > SCRATCH_SIZE) {
        data = PyBytes_FromStringAndSize(NULL, size);
        if (data == NULL)
            return NULL;
        into = PyBytes_AS_STRING(data);
    }
    ssize_t got;
    do {
        got = recv(fd, into, (size_t)size, NOW);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        Py_XDECREF(data);
        if (nothing_now())
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (data == NULL)
        return PyBytes_FromStringAndSize(scratch, got);
    if (got != size && _PyBytes_Resize(&data, got) < 0)
        return NULL;
    return data;
}

static PyObject *bytes_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bytes_of(buffer, size)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *data = NULL;
    if (size < 0 || size > view.len)
        PyErr_SetString(PyExc_ValueError, "size outside the buffer");
    else
        data = PyBytes_FromStringAndSize((const char *)view.buf, size);
    PyBuffer_Release(&view);
    return data;
}

static PyObject *recv_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_into(fd, buffer)");
        return NULL;
    }
    if (descriptor(args[0], &fd) < 0)
        return NULL;
    Py_buffer buffer;
    if (PyObject_GetBuffer(args[1], &buffer, PyBUF_WRITABLE) < 0)
        return NULL;
    ssize_t got;
    do {
        got = recv(fd, buffer.buf, (size_t)buffer.len, NOW);
    } while (got < 0 && errno == EINTR);
    PyBuffer_Release(&buffer);
    if (got < 0) {
        if (nothing_now())
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(got);
}

static PyObject *send_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send(fd, data, more=False)");
        return NULL;
    }
    if (descriptor(args[0], &fd) < 0)
        return NULL;
    int more = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
    if (more < 0)
        return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t sent;
    do {
        sent = send(fd, data.buf, (size_t)data.len, more ? NOW | MSG_MORE : NOW);
    } while (sent < 0 && errno == EINTR);
    PyBuffer_Release(&data);
    if (sent < 0) {
        if (nothing_now())
            return PyLong_FromLong(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(sent);
}

static PyObject *shutdown_write(PyObject *module, PyObject *argument) {
    int fd;
    if (descriptor(argument, &fd) < 0)
        return NULL;
    if (shutdown(fd, SHUT_WR) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *local_name(PyObject *module, PyObject *argument) {
    int fd;
    if (descriptor(argument, &fd) < 0)
        return NULL;
    struct sockaddr_storage storage;
    socklen_t length = sizeof(storage);
    memset(&storage, 0, sizeof(storage));
    if (getsockname(fd, (struct sockaddr *)&storage, &length) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return address(&storage, length);
}

enum { DRAIN_SIZE = 65536, DRAIN_READS = 16 };

static PyObject *drain(PyObject *module, PyObject *argument) {
    int fd;
    if (descriptor(argument, &fd) < 0)
        return NULL;
    static char discarded[DRAIN_SIZE];  // never read: one buffer serves every call
    long total = 0;
    for (int reads = 0; reads < DRAIN_READS; reads++) {
        ssize_t got = recv(fd, discarded, sizeof(discarded), NOW);
        if (got > 0) {
            total += got;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && nothing_now())
            break;
        return PyLong_FromLong(-1);  // the end of stream, or an error
    }
    return PyLong_FromLong(total);
}

static PyObject *connect_to(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "connect(host: str, port: int)");
        return NULL;
    }
    const char *host = PyUnicode_AsUTF8(args[0]);
    if (host == NULL)
        return NULL;
    long port = PyLong_AsLong(args[1]);
    if (port == -1 && PyErr_Occurred())
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "connect(): port out of range");
        return NULL;
    }
    struct sockaddr_storage storage;
    memset(&storage, 0, sizeof(storage));
    socklen_t length;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&storage;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&storage;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        length = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        length = sizeof(*v6);
    } else {
        PyErr_Format(PyExc_ValueError, "connect(): %s is not a numeric address", host);
        return NULL;
    }
    int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int on = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    int result;
    do
        result = connect(fd, (struct sockaddr *)&storage, length);
    while (result != 0 && errno == EINTR);
    if (result != 0 && errno == EINPROGRESS) {
        /* Asked again: 0 once the handshake is over, as it mostly is by now to a server on
         * this host or a near one (the SYN-ACK was handled as the first call returned);
         * EALREADY while it goes on; the error of one that failed (a refusal). */
        do
            result = connect(fd, (struct sockaddr *)&storage, length);
        while (result != 0 && errno == EINTR);
        if (result != 0 && errno == EISCONN) /* TCP Fast Open's deferred connect */
            result = 0;
        else if (result != 0 && errno == EALREADY)
            errno = EINPROGRESS;
    }
    if (result != 0 && errno != EINPROGRESS) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    PyObject *items[2] = {PyLong_FromLong(fd), PyBool_FromLong(result == 0)};
    PyObject *pair = tuple_of(2, items);
    if (pair == NULL)
        close(fd);
    return pair;
}

static PyObject *socket_error(PyObject *module, PyObject *argument) {
    int fd, error = 0;
    if (descriptor(argument, &fd) < 0)
        return NULL;
    socklen_t length = sizeof(error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(error);
}

static PyObject *close_descriptor(PyObject *module, PyObject *argument) {
    int fd;
    if (descriptor(argument, &fd) < 0)
        return NULL;
    if (close(fd) != 0 && errno != EINTR)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *epoll_create_set(PyObject *module, PyObject *unused) {
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(epfd);
}

/* The two descriptors of an epoll_forget call. */
static int two_descriptors(PyObject *const *args, Py_ssize_t nargs, const char *name, int *epfd, int *fd) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments", name);
        return -1;
    }
    return descriptor(args[0], epfd) < 0 || descriptor(args[1], fd) < 0 ? -1 : 0;
}

static PyObject *epoll_watch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int epfd, fd;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "epoll_watch(epfd, fd, writable)");
        return NULL;
    }
    if (descriptor(args[0], &epfd) < 0 || descriptor(args[1], &fd) < 0)
        return NULL;
    int writable = PyObject_IsTrue(args[2]);
    if (writable < 0)
        return NULL;
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = writable ? EPOLLOUT : EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *epoll_forget(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    int epfd, fd;
    if (two_descriptors(args, nargs, "epoll_forget", &epfd, &fd) < 0)
        return NULL;
    struct epoll_event event;  /* ignored by DEL, but kernels before 2.6.9 wanted one */
    memset(&event, 0, sizeof(event));
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &event) != 0 && errno != ENOENT && errno != EBADF)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

enum { READY_MAX = 256 };

static PyObject *epoll_ready(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "epoll_ready() takes 2 arguments");
        return NULL;
    }
    int epfd;
    if (descriptor(args[0], &epfd) < 0)
        return NULL;
    long wanted = PyLong_AsLong(args[1]);
    if (wanted == -1 && PyErr_Occurred())
        return NULL;
    if (wanted < 1 || wanted > READY_MAX)
        wanted = READY_MAX;
    struct epoll_event events[READY_MAX];
    int count;
    do
        count = epoll_wait(epfd, events, (int)wanted, 0);
    while (count < 0 && errno == EINTR);
    if (count < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *ready = PyTuple_New(count);
    if (ready == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *fd = PyLong_FromLong(events[i].data.fd);
        if (fd == NULL) {
            Py_DECREF(ready);
            return NULL;
        }
        PyTuple_SET_ITEM(ready, i, fd);
    }
    return ready;
}

static PyMethodDef methods[] = {
    {"accept", (PyCFunction)(void (*)(void))accept_connection, METH_FASTCALL, "accept(fd): see _nowait.c."},
    {"recv", (PyCFunction)(void (*)(void))recv_bytes, METH_FASTCALL, "recv(fd, size): see _nowait.c."},
    {"recv_into", (PyCFunction)(void (*)(void))recv_into, METH_FASTCALL, "recv_into(fd, buffer): see _nowait.c."},
    {"bytes_of", (PyCFunction)(void (*)(void))bytes_of, METH_FASTCALL, "bytes_of(buffer, size): see _nowait.c."},
    {"send", (PyCFunction)(void (*)(void))send_bytes, METH_FASTCALL, "send(fd, data, more=False): see _nowait.c."},
    {"shutdown_write", shutdown_write, METH_O, "shutdown_write(fd): see _nowait.c."},
    {"getsockname", local_name, METH_O, "getsockname(fd): see _nowait.c."},
    {"close", close_descriptor, METH_O, "close(fd): see _nowait.c."},
    {"drain", drain, METH_O, "drain(fd): see _nowait.c."},
    {"connect", (PyCFunction)(void (*)(void))connect_to, METH_FASTCALL, "connect(host, port): see _nowait.c."},
    {"socket_error", socket_error, METH_O, "socket_error(fd): see _nowait.c."},
    {"epoll_create", epoll_create_set, METH_NOARGS, "epoll_create(): see _nowait.c."},
    {"epoll_watch", (PyCFunction)(void (*)(void))epoll_watch, METH_FASTCALL, "epoll_watch(epfd, fd, writable): see _nowait.c."},
    {"epoll_forget", (PyCFunction)(void (*)(void))epoll_forget, METH_FASTCALL, "epoll_forget(epfd, fd): see _nowait.c."},
    {"epoll_ready", (PyCFunction)(void (*)(void))epoll_ready, METH_FASTCALL, "epoll_ready(epfd, max): see _nowait.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nowait", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nowait(void) { return PyModule_Create(&module); }
