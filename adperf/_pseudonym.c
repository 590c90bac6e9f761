/* HMAC-SHA256 pseudonyms of Arrow string arrays, each distinct id hashed once.
 *
 * The hot loop of adperf/pseudonym.py (IdPseudonymizer) in C: a day of server logs holds
 * millions of id occurrences and about a million distinct ids; in Python each HMAC costs
 * ~1.3 us of interpreter overhead around ~0.1 us of SHA-256. Here the key's inner and outer
 * SHA-256 states are computed once (RFC 2104) and copied per id, OpenSSL's SHA-256 (which uses
 * the CPU's SHA extensions where present) does the hashing, and a hash table keeps each
 * distinct id's digest for the object's lifetime, so an id seen again costs one lookup.
 * The GIL is released while a call runs; one object serves one call at a time (a lock).
 *
 * The values are exactly those of Python's hmac.new(key, id_utf8, sha256).digest()[:n]
 * (tests/test_pseudonym.py checks both ways, every build).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <string.h>

/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, whose per-call
 * context set-up costs more than the hash of a 20-byte id; the struct copy below is the point. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#define BLOCK 64
#define MAX_PREFIX 16
#define INLINE 36   /* ids up to this long (a UUID) live in their entry; longer in the arena */
#define SLOT_AHEAD 16  /* see the row loop */
#define ENTRY_AHEAD 8
#define RING 32        /* a power of two above SLOT_AHEAD */

/* A distinct id met: one cache line, appended in the order ids are first met. */
typedef struct {
    uint64_t hash;   /* of the id's bytes */
    uint32_t size;   /* the id's length */
    uint8_t digest[MAX_PREFIX];
    uint8_t id[INLINE]; /* the id; for a longer one, where it starts in the arena (8 bytes) */
} Entry;
_Static_assert(sizeof(Entry) == 64, "an entry is one cache line");

/* The index: open addressing with linear probing over 8-byte slots (the entry's number + 1
 * in the low half, 0: empty; the hash's high half in the high half). Small next to the
 * entries, so probing mostly hits the cache, and growing moves 8 bytes per id, not 64. */
typedef struct {
    PyObject_HEAD
    SHA256_CTX inner, outer;
    int prefix;              /* digest bytes kept per id */
    uint64_t *slots;
    size_t cap;              /* a power of two */
    Entry *entries;
    size_t used, room;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    PyThread_type_lock lock;
} Pseudonymizer;

static uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = mix(0x9e3779b97f4a7c15ULL ^ (uint64_t)n);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix(h ^ w) + 0x9e3779b97f4a7c15ULL;
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, n);
    return mix(h ^ tail);
}

static inline uint64_t slot_of(uint64_t hash, size_t entry) {
    return (hash & 0xffffffff00000000ULL) | (uint64_t)(entry + 1);
}

static int grow_slots(Pseudonymizer *self) {
    size_t cap = self->cap ? self->cap * 2 : 1 << 10;
    uint64_t *slots = PyMem_RawCalloc(cap, sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t e = 0; e < self->used; e++) {
        size_t j = self->entries[e].hash & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = slot_of(self->entries[e].hash, e);
    }
    PyMem_RawFree(self->slots);
    self->slots = slots;
    self->cap = cap;
    return 0;
}

static Entry *new_entry(Pseudonymizer *self) {
    if (self->used == self->room) {
        size_t room = self->room ? self->room * 2 : 1 << 9;
        if (room > UINT32_MAX - 1) return NULL;
        Entry *entries = PyMem_RawRealloc(self->entries, room * sizeof *entries);
        if (entries == NULL) return NULL;
        self->entries = entries;
        self->room = room;
    }
    return &self->entries[self->used];
}

static int keep_long(Pseudonymizer *self, const uint8_t *p, size_t n, uint64_t *at) {
    if (self->arena_len + n > self->arena_cap) {
        size_t cap = self->arena_cap ? self->arena_cap : 1 << 14;
        while (cap < self->arena_len + n) cap *= 2;
        uint8_t *arena = PyMem_RawRealloc(self->arena, cap);
        if (arena == NULL) return -1;
        self->arena = arena;
        self->arena_cap = cap;
    }
    memcpy(self->arena + self->arena_len, p, n);
    *at = self->arena_len;
    self->arena_len += n;
    return 0;
}

static inline int same_id(const Pseudonymizer *self, const Entry *e, const uint8_t *p, size_t n) {
    if (e->size != n) return 0;
    if (n <= INLINE) return memcmp(e->id, p, n) == 0;
    uint64_t at;
    memcpy(&at, e->id, sizeof at);
    return memcmp(self->arena + at, p, n) == 0;
}

/* The entry of the id p[0:n] (hash h), HMAC'd and kept when met for the first time; NULL: no
 * memory. */
static const Entry *find(Pseudonymizer *self, const uint8_t *p, size_t n, uint64_t h) {
    uint64_t tag = h & 0xffffffff00000000ULL;
    size_t j = h & (self->cap - 1);
    for (uint64_t slot; (slot = self->slots[j]) != 0; j = (j + 1) & (self->cap - 1)) {
        if ((slot & 0xffffffff00000000ULL) != tag) continue;
        const Entry *e = &self->entries[(slot & 0xffffffffULL) - 1];
        if (e->hash == h && same_id(self, e, p, n)) return e;
    }
    if ((self->used + 1) * 2 > self->cap) {
        if (grow_slots(self) < 0) return NULL;
        return find(self, p, n, h);
    }
    Entry *e = new_entry(self);
    if (e == NULL) return NULL;
    if (n <= INLINE) {
        memcpy(e->id, p, n);
    } else {
        uint64_t at;
        if (keep_long(self, p, n, &at) < 0) return NULL;
        memcpy(e->id, &at, sizeof at);
    }
    uint8_t inner[SHA256_DIGEST_LENGTH], outer[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = self->inner;
    SHA256_Update(&ctx, p, n);
    SHA256_Final(inner, &ctx);
    ctx = self->outer;
    SHA256_Update(&ctx, inner, sizeof inner);
    SHA256_Final(outer, &ctx);
    memcpy(e->digest, outer, (size_t)self->prefix);
    e->hash = h;
    e->size = (uint32_t)n;
    self->slots[j] = slot_of(h, self->used);
    self->used++;
    return e;
}

static int Pseudonymizer_init(Pseudonymizer *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "prefix", NULL};
    Py_buffer key;
    int prefix = 16;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|i", kwlist, &key, &prefix)) return -1;
    if (self->lock != NULL) {
        /* Its table holds digests made under the first key: they must never answer for another. */
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_RuntimeError,
                        "Pseudonymizer: already initialized (make a new one)");
        return -1;
    }
    if (key.len == 0 || prefix < 1 || prefix > MAX_PREFIX) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "an empty key, or prefix not in 1..16");
        return -1;
    }
    uint8_t block[BLOCK] = {0}, pad[BLOCK];
    if (key.len > BLOCK)
        SHA256(key.buf, (size_t)key.len, block);
    else
        memcpy(block, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    for (int i = 0; i < BLOCK; i++) pad[i] = block[i] ^ 0x36;
    SHA256_Init(&self->inner);
    SHA256_Update(&self->inner, pad, BLOCK);
    for (int i = 0; i < BLOCK; i++) pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&self->outer);
    SHA256_Update(&self->outer, pad, BLOCK);
    memset(block, 0, sizeof block);
    memset(pad, 0, sizeof pad);
    self->prefix = prefix;
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Pseudonymizer_dealloc(Pseudonymizer *self) {
    PyMem_RawFree(self->slots);
    PyMem_RawFree(self->entries);
    PyMem_RawFree(self->arena);
    if (self->lock) PyThread_free_lock(self->lock);
    memset(&self->inner, 0, sizeof self->inner);
    memset(&self->outer, 0, sizeof self->outer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static char HEX_PAIRS[256][2];  /* each byte's two lowercase hex digits */

/* offset i of an Arrow offsets buffer (int32 or int64). */
static inline int64_t offset_at(const void *offsets, int wide, Py_ssize_t i) {
    return wide ? ((const int64_t *)offsets)[i] : ((const int32_t *)offsets)[i];
}

static inline uint64_t row_hash(const void *offsets, int wide, const uint8_t *bytes,
                                Py_ssize_t i) {
    int64_t lo = offset_at(offsets, wide, i);
    return hash_bytes(bytes + lo, (size_t)(offset_at(offsets, wide, i + 1) - lo));
}

static PyObject *Pseudonymizer_hex(Pseudonymizer *self, PyObject *args) {
    Py_buffer offsets, data;
    Py_ssize_t start, length;
    int wide;
    if (!PyArg_ParseTuple(args, "y*y*nnp", &offsets, &data, &start, &length, &wide)) return NULL;
    PyObject *out = NULL;
    int width = wide ? 8 : 4;
    if (self->lock == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pseudonymizer: __init__ was not called");
        goto done;
    }
    if (start < 0 || length < 0 || offsets.len / width < start + length + 1) {
        PyErr_SetString(PyExc_ValueError, "offsets: too short for start and length");
        goto done;
    }
    /* Arrow's layout, checked before the GIL is let go: a bad buffer is an error, not a crash. */
    int64_t prev = offset_at(offsets.buf, wide, start);
    for (Py_ssize_t i = 1; i <= length; i++) {
        int64_t next = offset_at(offsets.buf, wide, start + i);
        if (prev < 0 || next < prev || next > data.len || next - prev >= UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "offsets: not an Arrow string layout");
            goto done;
        }
        prev = next;
    }
    size_t each = 2 * (size_t)self->prefix;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(each * (size_t)length));
    if (out == NULL) goto done;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    const uint8_t *bytes = data.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    if (self->cap == 0 && grow_slots(self) < 0) failed = 1;
    Py_ssize_t rows = failed ? 0 : length;
    /* A software pipeline over the rows: row i+SLOT_AHEAD is hashed and its slot prefetched,
     * the entry row i+ENTRY_AHEAD's slot points to is prefetched, row i is looked up. The
     * memory latencies of a few dozen rows overlap instead of adding up. */
    uint64_t ring[RING];
    for (Py_ssize_t i = 0; i < rows && i < SLOT_AHEAD; i++) {
        ring[i % RING] = row_hash(offsets.buf, wide, bytes, start + i);
        __builtin_prefetch(&self->slots[ring[i % RING] & (self->cap - 1)]);
    }
    for (Py_ssize_t i = 0; i < rows; i++) {
        if (i + SLOT_AHEAD < rows) {
            uint64_t h = row_hash(offsets.buf, wide, bytes, start + i + SLOT_AHEAD);
            ring[(i + SLOT_AHEAD) % RING] = h;
            __builtin_prefetch(&self->slots[h & (self->cap - 1)]);
        }
        if (i + ENTRY_AHEAD < rows) {
            uint64_t slot = self->slots[ring[(i + ENTRY_AHEAD) % RING] & (self->cap - 1)];
            if (slot) __builtin_prefetch(&self->entries[(slot & 0xffffffffULL) - 1]);
        }
        int64_t lo = offset_at(offsets.buf, wide, start + i);
        int64_t hi = offset_at(offsets.buf, wide, start + i + 1);
        const Entry *e = find(self, bytes + lo, (size_t)(hi - lo), ring[i % RING]);
        if (e == NULL) {
            failed = 1;
            break;
        }
        for (int b = 0; b < self->prefix; b++) memcpy(dst + 2 * b, HEX_PAIRS[e->digest[b]], 2);
        dst += each;
    }
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_CLEAR(out);
        PyErr_NoMemory();
    }
done:
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *Pseudonymizer_distinct(Pseudonymizer *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSize_t(self->used);
}

static PyMethodDef Pseudonymizer_methods[] = {
    {"hex", (PyCFunction)Pseudonymizer_hex, METH_VARARGS,
     "hex(offsets, data, start, length, wide) -> bytes: `length` lowercase hex pseudonyms "
     "(2*prefix characters each) of an Arrow string array's values start..start+length-1, "
     "given its offsets buffer (int64 when wide) and data buffer. Nulls are not looked at: "
     "their entries hash whatever bytes their offsets span."},
    {"distinct", (PyCFunction)Pseudonymizer_distinct, METH_NOARGS,
     "distinct() -> int: the distinct ids hashed so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PseudonymizerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "adperf._pseudonym.Pseudonymizer",
    .tp_doc = "Pseudonymizer(key, prefix=16): HMAC-SHA256 prefixes of ids, each distinct id once.",
    .tp_basicsize = sizeof(Pseudonymizer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pseudonymizer_init,
    .tp_dealloc = (destructor)Pseudonymizer_dealloc,
    .tp_methods = Pseudonymizer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "adperf._pseudonym",
    "HMAC-SHA256 pseudonyms of Arrow string arrays (see adperf/pseudonym.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__pseudonym(void) {
    for (int b = 0; b < 256; b++) {
        HEX_PAIRS[b][0] = "0123456789abcdef"[b >> 4];
        HEX_PAIRS[b][1] = "0123456789abcdef"[b & 15];
    }
    if (PyType_Ready(&PseudonymizerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PseudonymizerType);
    if (PyModule_AddObject(m, "Pseudonymizer", (PyObject *)&PseudonymizerType) < 0) {
        Py_DECREF(&PseudonymizerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
