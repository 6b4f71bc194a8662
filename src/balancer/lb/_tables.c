/* The table builds of lb/ in C: Maglev's lookup table and the ring's sorted points.
 *
 * Both produce exactly what the Python code beside them produces (lb/maglev.py
 * build_table, lb/ring.py Ring), which stays the reference and the fallback of a build
 * without a C compiler (BALANCER_PURE=1); tests/unit/lb compare the two. Python does the
 * hashing (hashlib) and keeps the API; only the loops over every slot or point are here:
 * compiled Python boxes every integer of a 65537-slot table, C does not.
 *
 * maglev_fill(digests, weights, size) -> list[int]
 *     `digests`: 16 bytes per server, in server order; a server's offset is its first
 *     little-endian 64 bits mod size, its skip its last 64 mod (size - 1), plus 1.
 *     Servers take turns (weighted by credits, as in build_table), each taking the next
 *     empty slot of its preference list (offset + j * skip) % size. The last isqrt(size)
 *     slots are found by rank among the empty ones, which is the slot probing would reach.
 * maglev_deal(table, wanting, needs, positions, skips) -> None
 *     The stable table's turns (lb/maglev.py _deal, _walk): server wanting[j] takes
 *     needs[j] free (-1) slots of the list `table`, in turns, each the first free one along
 *     its permutation from positions[j] by skips[j]. Changes `table` in place.
 * ring_build(points, positions, owners) -> None
 *     `points`: one buffer of native unsigned 32-bit integers (array('I')) per server, in
 *     server order, its points' hash draws: a point's position is its draw's top 30 bits.
 *     Writes every point's position and the index of its server to `positions` and
 *     `owners` (writable uint32 buffers of one item per point: the Ring's own arrays, no
 *     copy after), sorted by position, stably (equal positions stay in server order): a
 *     three-pass LSD radix sort of 10 bits each (1,024 buckets: the scatter stays in
 *     cache) of 8-byte keys, position above owner.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int read_int64s(PyObject *sequence, const char *name, int64_t **out, Py_ssize_t *count) {
    PyObject *fast = PySequence_Fast(sequence, name);
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int64_t *values = PyMem_Malloc(sizeof(int64_t) * (n ? n : 1));
    if (values == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        values[i] = PyLong_AsLongLong(items[i]);
        if (values[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(values);
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    *out = values;
    *count = n;
    return 0;
}

/* The inverse of a modulo m (a and m coprime), by the extended Euclidean algorithm. */
static int64_t inverse_mod(int64_t a, int64_t m) {
    int64_t t = 0, new_t = 1, r = m, new_r = a % m;
    while (new_r != 0) {
        int64_t q = r / new_r, tmp;
        tmp = t - q * new_t; t = new_t; new_t = tmp;
        tmp = r - q * new_r; r = new_r; new_r = tmp;
    }
    return t < 0 ? t + m : t;
}

/* Trial division: sizes are at most a few million, this runs once per table. */
static int is_prime64(int64_t x) {
    if (x < 2)
        return 0;
    for (int64_t d = 2; d * d <= x; d++)
        if (x % d == 0)
            return 0;
    return 1;
}

static int64_t isqrt64(int64_t x) {
    int64_t r = 0;
    while ((r + 1) * (r + 1) <= x)
        r++;
    return r;
}

/* A server's next slot: the first one after `c`, by steps of `skip` mod `size`, whose bit
 * in `taken` is clear. There must be one. `c` is the slot the server took last, taken by
 * itself, so the walk starts a step further (before its first turn, one step before its
 * offset). Probing reads the bitmap (8 KiB for 65537 slots: L1), not the table. Once the
 * table is half full a walk is long and ends at an unpredictable step, one mispredicted
 * branch per step tested; `by_eights` tests eight steps at once, their bits gathered into
 * one mask, so the steps' loads overlap and a walk branches once per eight. */
static inline uint32_t next_free(const uint64_t *taken, uint32_t c, uint32_t skip, uint32_t size, int by_eights) {
    if (!by_eights) {
        do {
            c += skip;
            if (c >= size)
                c -= size;
        } while (taken[c >> 6] >> (c & 63) & 1);
        return c;
    }
    for (;;) {
        uint32_t slots[8];
        unsigned clear = 0;
        for (unsigned k = 0; k < 8; k++) {
            c += skip;
            if (c >= size)
                c -= size;
            slots[k] = c;
            clear |= (unsigned)(~taken[c >> 6] >> (c & 63) & 1) << k;
        }
        if (clear)
            return slots[__builtin_ctz(clear)];
    }
}

/* The two 64-bit halves of a server's 16-byte digest, little-endian (lb/maglev.py reads
 * them with int.from_bytes(digest, "little")). */
static uint64_t little_endian_64(const unsigned char *bytes) {
    uint64_t value = 0;
    for (int k = 7; k >= 0; k--)
        value = value << 8 | bytes[k];
    return value;
}

/* Weighted turns: a server earns its weight in credit at each of its turns and fills a
 * slot when it holds `heaviest`; weights <= heaviest, so one slot per turn at most. */
static inline int takes_turn(int64_t *credits, const int64_t *weights, Py_ssize_t i, int64_t heaviest) {
    int64_t credit = credits[i] + weights[i];
    if (credit < heaviest) {
        credits[i] = credit;
        return 0;
    }
    credits[i] = credit - heaviest;
    return 1;
}

static PyObject *maglev_fill(PyObject *self, PyObject *args) {
    Py_buffer digests;
    PyObject *weights_in;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*On", &digests, &weights_in, &size))
        return NULL;
    int64_t *weights = NULL, *credits = NULL;
    uint32_t *offsets = NULL, *skips = NULL, *positions = NULL, *inverses = NULL, *empty = NULL;
    int32_t *table = NULL;
    uint64_t *taken = NULL; /* a bit per slot */
    PyObject *result = NULL, **owners = NULL;
    Py_ssize_t n = digests.len / 16, n_weights;
    if (read_int64s(weights_in, "weights", &weights, &n_weights) < 0)
        goto done;
    if (digests.len % 16 != 0 || n_weights != n || n == 0 || size <= n || size > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "maglev_fill: bad sizes");
        goto done;
    }
    if (!is_prime64(size)) { /* a skip sharing a factor with size walks a part of the table */
        PyErr_SetString(PyExc_ValueError, "maglev_fill: the size must be a prime");
        goto done;
    }
    offsets = PyMem_Malloc(sizeof(uint32_t) * n);
    skips = PyMem_Malloc(sizeof(uint32_t) * n);
    positions = PyMem_Malloc(sizeof(uint32_t) * n);
    inverses = PyMem_Calloc(n, sizeof(uint32_t)); /* 0: not computed (an inverse is not 0) */
    credits = PyMem_Calloc(n, sizeof(int64_t));
    table = PyMem_Malloc(sizeof(int32_t) * size);
    owners = PyMem_Calloc(n, sizeof(PyObject *));
    taken = PyMem_Calloc(size / 64 + 1, sizeof(uint64_t));
    if (!offsets || !skips || !positions || !inverses || !credits || !table || !owners || !taken) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t heaviest = 0;
    int equal = 1;
    const unsigned char *digest = digests.buf;
    for (Py_ssize_t i = 0; i < n; i++, digest += 16) {
        if (weights[i] <= 0) {
            PyErr_SetString(PyExc_ValueError, "maglev_fill: a weight out of range");
            goto done;
        }
        offsets[i] = (uint32_t)(little_endian_64(digest) % (uint64_t)size);
        skips[i] = (uint32_t)(little_endian_64(digest + 8) % (uint64_t)(size - 1) + 1);
        positions[i] = offsets[i] >= skips[i] ? offsets[i] - skips[i] : offsets[i] + (uint32_t)size - skips[i];
        if (weights[i] > heaviest)
            heaviest = weights[i];
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (weights[i] != heaviest)
            equal = 0;
    int64_t root = isqrt64(size);
    Py_ssize_t switch_at = size - (root > 1 ? root : 1), half = size / 2;
    Py_ssize_t filled = 0, i = 0;
    /* Probing, in a loop of its own: with the rank-finding below in the same loop the
     * compiler kept less of it in registers, and the probing took a quarter longer. */
    int by_eights = 0;
    while (filled < switch_at) {
        if (equal || takes_turn(credits, weights, i, heaviest)) {
            uint32_t c = positions[i] = next_free(taken, positions[i], skips[i], (uint32_t)size, by_eights);
            table[c] = (int32_t)i;
            taken[c >> 6] |= (uint64_t)1 << (c & 63);
            filled++;
        }
        if (++i == n) {
            i = 0;
            by_eights = filled > half;
        }
    }
    /* The last slots, in the same turns from server i on: each takes its most preferred
     * empty slot, the least (e - offset) / skip mod size over the empty slots e. */
    Py_ssize_t empty_count = 0;
    empty = PyMem_Malloc(sizeof(uint32_t) * (size - filled));
    if (empty == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t s = 0; s < size; s++)
        if (!(taken[s >> 6] >> (s & 63) & 1))
            empty[empty_count++] = (uint32_t)s;
    uint64_t modulus = (uint64_t)size;
    while (empty_count > 0) {
        if (equal || takes_turn(credits, weights, i, heaviest)) {
            /* Only the servers that take a turn here need their inverse (256 of 1,000 at
             * M = 65537): computing all of them was half of this loop's time. */
            if (inverses[i] == 0)
                inverses[i] = (uint32_t)inverse_mod(skips[i], size);
            Py_ssize_t best = 0;
            uint64_t best_rank = UINT64_MAX, inverse = inverses[i], offset = offsets[i];
            for (Py_ssize_t k = 0; k < empty_count; k++) {
                uint64_t delta = empty[k] >= offset ? empty[k] - offset : empty[k] + modulus - offset;
                uint64_t rank = delta * inverse % modulus; /* size < 2**31: no overflow */
                if (rank < best_rank) {
                    best_rank = rank;
                    best = k;
                }
            }
            uint32_t c = empty[best];
            memmove(empty + best, empty + best + 1, sizeof(uint32_t) * (empty_count - best - 1));
            empty_count--;
            table[c] = (int32_t)i;
        }
        if (++i == n)
            i = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        owners[i] = PyLong_FromSsize_t(i);
        if (owners[i] == NULL)
            goto done;
    }
    result = PyList_New(size);
    if (result == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < size; s++) {
        PyObject *owner = owners[table[s]];
        Py_INCREF(owner);
        PyList_SET_ITEM(result, s, owner);
    }
done:
    if (owners != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(owners[i]);
    }
    PyMem_Free(owners);
    PyMem_Free(weights);
    PyMem_Free(offsets);
    PyMem_Free(skips);
    PyMem_Free(positions);
    PyMem_Free(inverses);
    PyMem_Free(credits);
    PyMem_Free(empty);
    PyMem_Free(table);
    PyMem_Free(taken);
    PyBuffer_Release(&digests);
    return result;
}

static PyObject *maglev_deal(PyObject *self, PyObject *args) {
    PyObject *table_list, *wanting_in, *needs_in, *positions_in, *skips_in;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyList_Type, &table_list, &wanting_in, &needs_in, &positions_in, &skips_in))
        return NULL;
    int64_t *wanting = NULL, *needs = NULL, *positions = NULL, *skips = NULL, *active = NULL;
    int32_t *table = NULL;
    PyObject *result = NULL;
    Py_ssize_t n, n_needs, n_positions, n_skips;
    Py_ssize_t size = PyList_GET_SIZE(table_list);
    if (read_int64s(wanting_in, "wanting", &wanting, &n) < 0 || read_int64s(needs_in, "needs", &needs, &n_needs) < 0 ||
        read_int64s(positions_in, "positions", &positions, &n_positions) < 0 ||
        read_int64s(skips_in, "skips", &skips, &n_skips) < 0)
        goto done;
    if (n_needs != n || n_positions != n || n_skips != n || size == 0 || size > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "maglev_deal: bad sizes");
        goto done;
    }
    table = PyMem_Malloc(sizeof(int32_t) * size);
    active = PyMem_Malloc(sizeof(int64_t) * (n ? n : 1));
    if (!table || !active) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t left = 0;
    for (Py_ssize_t s = 0; s < size; s++) {
        long owner = PyLong_AsLong(PyList_GET_ITEM(table_list, s));
        if (owner == -1 && PyErr_Occurred())
            goto done;
        if (owner < -1 || owner > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "maglev_deal: an owner out of range");
            goto done;
        }
        table[s] = (int32_t)owner;
        left += owner == -1;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (positions[j] < 0 || positions[j] >= size || skips[j] <= 0 || skips[j] >= size || wanting[j] < 0 ||
            wanting[j] > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "maglev_deal: a position, skip or server out of range");
            goto done;
        }
        active[j] = j;
    }
    Py_ssize_t n_active = n;
    while (left && n_active) {
        for (Py_ssize_t a = 0; a < n_active && left; a++) {
            Py_ssize_t j = active[a];
            int64_t slot = positions[j], skip = skips[j];
            Py_ssize_t steps = 0;
            while (table[slot] >= 0) {
                slot += skip;
                if (slot >= size)
                    slot -= size;
                if (++steps > size) { /* a skip sharing a factor with size: no permutation */
                    PyErr_SetString(PyExc_ValueError, "maglev_deal: a walk found no free slot");
                    goto done;
                }
            }
            table[slot] = (int32_t)wanting[j];
            positions[j] = slot;
            needs[j]--;
            left--;
            if (PyList_SetItem(table_list, slot, PyLong_FromLong(table[slot])) < 0)
                goto done;
        }
        Py_ssize_t kept = 0;
        for (Py_ssize_t a = 0; a < n_active; a++)
            if (needs[active[a]] > 0)
                active[kept++] = active[a];
        n_active = kept;
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(wanting);
    PyMem_Free(needs);
    PyMem_Free(positions);
    PyMem_Free(skips);
    PyMem_Free(active);
    PyMem_Free(table);
    return result;
}

#define RADIX_BITS 10
#define PASSES 3
#define RADIX (1u << RADIX_BITS)
#define POSITION_BITS (PASSES * RADIX_BITS)

/* The sort's two key arrays, kept from one build to the next (16 bytes per point of the
 * largest ring built, for the life of the process: 6.4 MB for 1,000 servers of weight 100):
 * a rebuild (a server down or back) then writes to memory already mapped. Freed and mapped
 * again each time, their pages faulted in anew: half of a 1,000-server rebuild's time, in
 * the kernel. The GIL serialises the builds. */
static uint64_t *ring_keys;
static Py_ssize_t ring_keys_room; /* points the two arrays hold */

static PyObject *ring_build(PyObject *self, PyObject *args) {
    PyObject *each;
    Py_buffer positions_out, owners_out;
    if (!PyArg_ParseTuple(args, "Ow*w*", &each, &positions_out, &owners_out))
        return NULL;
    PyObject *result = NULL;
    uint32_t (*counts)[RADIX] = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t viewed = 0, n = 0, servers = 0;
    PyObject *fast = PySequence_Fast(each, "ring_build: a sequence of point buffers");
    if (fast == NULL)
        goto done;
    servers = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    views = PyMem_Calloc(servers ? servers : 1, sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((uint64_t)servers > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "ring_build: too many servers");
        goto done;
    }
    for (; viewed < servers; viewed++) {
        if (PyObject_GetBuffer(items[viewed], &views[viewed], PyBUF_SIMPLE) < 0)
            goto done;
        if (views[viewed].len % 4 != 0) {
            viewed++;
            PyErr_SetString(PyExc_ValueError, "ring_build: a buffer of uint32 points");
            goto done;
        }
        n += views[viewed].len / 4;
    }
    if (positions_out.len != n * 4 || owners_out.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "ring_build: the outputs must hold a uint32 per point");
        goto done;
    }
    if (n > ring_keys_room) {
        uint64_t *grown = PyMem_RawRealloc(ring_keys, sizeof(uint64_t) * 2 * n);
        if (grown == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        ring_keys = grown;
        ring_keys_room = n;
    }
    uint64_t *keys = ring_keys, *scratch = ring_keys + n;
    counts = PyMem_Calloc(PASSES, sizeof(*counts));
    if (counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* A point's key: its position above its server's index. The servers come in order, so
     * sorting by position stably keeps equal positions in server order. Every pass's
     * histogram is counted in this one read. */
    Py_ssize_t at = 0;
    for (Py_ssize_t owner = 0; owner < servers; owner++) {
        const uint32_t *draws = views[owner].buf;
        Py_ssize_t count = views[owner].len / 4;
        for (Py_ssize_t i = 0; i < count; i++) {
            uint32_t position = draws[i] >> (32 - POSITION_BITS);
            keys[at++] = ((uint64_t)position << 32) | (uint64_t)owner;
            for (int pass = 0; pass < PASSES; pass++)
                counts[pass][(position >> (pass * RADIX_BITS)) & (RADIX - 1)]++;
        }
    }
    for (int pass = 0; pass < PASSES; pass++) {
        uint32_t total = 0;
        for (uint32_t b = 0; b < RADIX; b++) {
            uint32_t c = counts[pass][b];
            counts[pass][b] = total;
            total += c;
        }
    }
    /* LSD radix sort, low bits first, of one 8-byte key per point (one write stream per
     * bucket, where a position and an owner apart made two): keys -> scratch -> keys -> scratch. */
    uint64_t *from = keys, *to = scratch;
    for (int pass = 0; pass < PASSES; pass++) {
        uint32_t *offsets = counts[pass];
        int shift = 32 + pass * RADIX_BITS;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint64_t key = from[i];
            to[offsets[(key >> shift) & (RADIX - 1)]++] = key;
        }
        uint64_t *swap = from;
        from = to;
        to = swap;
    }
    uint32_t *out_points = positions_out.buf, *out_owners = owners_out.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        out_points[i] = (uint32_t)(from[i] >> 32);
        out_owners[i] = (uint32_t)from[i];
    }
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < viewed; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(counts);
    Py_XDECREF(fast);
    PyBuffer_Release(&positions_out);
    PyBuffer_Release(&owners_out);
    return result;
}

static PyMethodDef methods[] = {
    {"maglev_fill", maglev_fill, METH_VARARGS, "Maglev's lookup table from the servers' offsets, skips and weights."},
    {"maglev_deal", maglev_deal, METH_VARARGS, "The stable table's turns: free slots of a list dealt to servers."},
    {"ring_build", ring_build, METH_VARARGS, "Every server's ring points, with their owners, sorted by position (stable)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tables", NULL, -1, methods};

PyMODINIT_FUNC PyInit__tables(void) { return PyModule_Create(&module); }
