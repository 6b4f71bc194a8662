/* Socket calls whose "nothing now" is an answer, not an exception.
 *
 * CPython's socket methods raise BlockingIOError when a non-blocking call finds nothing to
 * do: an OSError made with its errno and its message (decoded from the C library's
 * strerror), then caught, about 9,500 instructions each time, where the system call itself
 * is a few hundred. Two calls of a connection's life end that way for nearly every
 * connection: the accept loop's last accept (the queue is empty), and the read that looks
 * for bytes a closing client sent unasked (net.linger; there are none). Together they were
 * a fifth of the ~97,000 instructions a plain HTTP connection cost (bench/conn_cost.py
 * --callgrind). HAProxy pays the system calls alone. net/acceptor.py and net/linger.py use
 * this module when it is built, the socket methods otherwise (BALANCER_PURE=1).
 *
 * accept(fd) -> (fd, address) | None
 *     accept4 on the listening descriptor `fd` (non-blocking: the call never waits, so the
 *     GIL is kept); the new descriptor is close-on-exec and in blocking mode, as
 *     socket._accept makes it. None when no connection waits (EAGAIN); an interrupted call
 *     is retried. Any other error raises OSError with its errno, as socket._accept does
 *     (EMFILE, ECONNABORTED, ...). `address` is what socket.accept gives: (host, port) for
 *     AF_INET, (host, port, flowinfo, scope_id) for AF_INET6, the path for AF_UNIX ('' for
 *     an unnamed client, bytes for an abstract one); None for another family.
 *
 * drain(fd) -> int
 *     Reads and discards what waits on the connected socket `fd` (MSG_DONTWAIT: blocking
 *     or not, the call never waits), at most DRAIN_READS reads of DRAIN_SIZE bytes. Returns
 *     how many bytes it discarded (0: nothing waited), or -1 once the stream is over: the
 *     peer's end of stream, or an error (a reset); the caller then closes the socket.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static PyObject *address(const struct sockaddr_storage *storage, socklen_t length) {
    char host[INET6_ADDRSTRLEN];
    switch (storage->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)storage;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(in->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)storage;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue(
            "(siII)", host, (int)ntohs(in6->sin6_port), (unsigned int)ntohl(in6->sin6_flowinfo),
            (unsigned int)in6->sin6_scope_id);
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

static PyObject *accept_connection(PyObject *module, PyObject *argument) {
    long listening = PyLong_AsLong(argument);
    if (listening == -1 && PyErr_Occurred())
        return NULL;
    struct sockaddr_storage storage;
    socklen_t length;
    int fd;
    do {
        length = sizeof(storage);
        fd = accept4((int)listening, (struct sockaddr *)&storage, &length, SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *peer = address(&storage, length);
    if (peer == NULL) {
        close(fd);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(iN)", fd, peer);
    if (result == NULL)
        close(fd);
    return result;
}

enum { DRAIN_SIZE = 65536, DRAIN_READS = 16 };

static PyObject *drain(PyObject *module, PyObject *argument) {
    long fd = PyLong_AsLong(argument);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    static char discarded[DRAIN_SIZE];  // never read: one buffer serves every call
    long total = 0;
    for (int reads = 0; reads < DRAIN_READS; reads++) {
        ssize_t got = recv((int)fd, discarded, sizeof(discarded), MSG_DONTWAIT);
        if (got > 0) {
            total += got;
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return PyLong_FromLong(-1);  // the end of stream, or an error
    }
    return PyLong_FromLong(total);
}

static PyMethodDef methods[] = {
    {"accept", accept_connection, METH_O, "accept(fd) -> (fd, address) | None: see _nowait.c."},
    {"drain", drain, METH_O, "drain(fd) -> int: bytes discarded, or -1 at the end: see _nowait.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nowait", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nowait(void) { return PyModule_Create(&module); }
