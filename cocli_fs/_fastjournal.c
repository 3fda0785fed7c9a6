/* Optional accelerator for start-up replay: decode a whole journal buffer into Records.
 *
 * It handles only our own records written exactly as record.encode writes them (checksum,
 * eight fields, "hlc=<16 hex>;seq=<digits>;t=<s|j|d>") and builds the same Record objects the
 * pure-Python record.decode_chunks builds. Every other chunk (cocli's records, loose or damaged
 * forms, blank chunks, newlines between records) is handed to the Python callback given to
 * setup(), which runs the Python general path, so the results are identical by construction:
 * this file only has to be right about what it accepts (a strict subset of what the Python fast
 * path accepts, with the same values). tests/test_record.py compares both on random journals.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* --- CRC-32 (the zlib / IEEE 802.3 polynomial, reflected), slicing by eight --------------- */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

static uint32_t crc32_of(const unsigned char *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* --- a conservative JSON check ------------------------------------------------------------ */
/* True only for text that Python's json.loads certainly accepts (RFC 8259 values, shallow, short
 * numbers). False means "not sure": the caller then asks json.loads itself. */

typedef struct {
    const unsigned char *p, *end;
} jcur;

static void j_ws(jcur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int j_hex(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int j_value(jcur *c, int depth);

static int j_string(jcur *c) {
    c->p++; /* the opening quote */
    while (c->p < c->end) {
        unsigned char ch = *c->p++;
        if (ch == '"') return 1;
        if (ch < 0x20) return 0;
        if (ch == '\\') {
            if (c->p >= c->end) return 0;
            ch = *c->p++;
            if (ch == 'u') {
                if (c->end - c->p < 4) return 0;
                for (int i = 0; i < 4; i++)
                    if (!j_hex(c->p[i])) return 0;
                c->p += 4;
            } else if (!strchr("\"\\/bfnrt", ch) || ch == 0) {
                return 0;
            }
        }
    }
    return 0;
}

static int j_digits(jcur *c) {
    const unsigned char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > s;
}

static int j_number(jcur *c) {
    const unsigned char *s = c->p;
    if (*c->p == '-') c->p++;
    if (c->p >= c->end) return 0;
    if (*c->p == '0') {
        c->p++;
    } else if (!j_digits(c)) {
        return 0;
    }
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!j_digits(c)) return 0;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (!j_digits(c)) return 0;
    }
    return c->p - s <= 40; /* far below int()'s digit limit */
}

static int j_word(jcur *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return 0;
    c->p += n;
    return 1;
}

static int j_value(jcur *c, int depth) {
    j_ws(c);
    if (c->p >= c->end) return 0;
    unsigned char ch = *c->p;
    int ok;
    if (ch == '"') {
        ok = j_string(c);
    } else if (ch == '[' || ch == '{') {
        if (depth >= 32) return 0;
        unsigned char close = ch == '[' ? ']' : '}';
        c->p++;
        j_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            ok = 1;
        } else {
            for (;;) {
                if (close == '}') {
                    j_ws(c);
                    if (c->p >= c->end || *c->p != '"' || !j_string(c)) return 0;
                    j_ws(c);
                    if (c->p >= c->end || *c->p != ':') return 0;
                    c->p++;
                }
                if (!j_value(c, depth + 1)) return 0;
                j_ws(c);
                if (c->p >= c->end) return 0;
                if (*c->p == ',') {
                    c->p++;
                    continue;
                }
                if (*c->p != close) return 0;
                c->p++;
                break;
            }
            ok = 1;
        }
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
        ok = j_number(c);
    } else if (ch == 't') {
        ok = j_word(c, "true");
    } else if (ch == 'f') {
        ok = j_word(c, "false");
    } else if (ch == 'n') {
        ok = j_word(c, "null");
    } else {
        ok = 0;
    }
    return ok;
}

static int json_surely_valid(const unsigned char *p, Py_ssize_t n) {
    jcur c = {p, p + n};
    if (!j_value(&c, 0)) return 0;
    j_ws(&c);
    return c.p == c.end;
}

/* --- set-up: the Record class, its slot offsets, the Python fallbacks ---------------------- */

static PyTypeObject *record_type = NULL;
static PyObject *general = NULL;    /* record._decode_general(chunk, pos) -> Record|None|False */
static PyObject *json_loads = NULL; /* json.loads */

enum { F_HLC, F_NODE, F_SEQ, F_TARGET, F_FIELD, F_KIND, F_VALUE, F_CAMPAIGN, F_ENV, F_TS, F_POS,
       F_COUNT };
static const char *slot_names[F_COUNT] = {"hlc",   "node_id", "seq",           "target",
                                          "field", "kind",    "value",         "campaign_name",
                                          "environment", "timestamp", "pos"};
static Py_ssize_t slot_offset[F_COUNT];

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *cls, *gen, *loads;
    if (!PyArg_ParseTuple(args, "O!OO", &PyType_Type, &cls, &gen, &loads)) return NULL;
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (tp->tp_itemsize != 0 || tp->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "Record must be a plain slots class");
        return NULL;
    }
    for (int i = 0; i < F_COUNT; i++) {
        PyObject *d = PyObject_GetAttrString(cls, slot_names[i]);
        if (d == NULL) return NULL;
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "Record.%s is not an object slot", slot_names[i]);
            return NULL;
        }
        slot_offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
    }
    Py_INCREF(cls);
    Py_INCREF(gen);
    Py_INCREF(loads);
    Py_XSETREF(record_type, tp);
    Py_XSETREF(general, gen);
    Py_XSETREF(json_loads, loads);
    Py_RETURN_NONE;
}

/* --- the decoder ----------------------------------------------------------------------------- */

static int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* A shared string for one of the few-valued fields: the previous record's if the bytes are the
 * same, else the table's (like decode_chunks' strings.setdefault). New reference or NULL. */
typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    PyObject *obj; /* borrowed from the table */
} last_str;

static PyObject *shared(last_str *last, PyObject *table, const unsigned char *p, Py_ssize_t n) {
    if (last->obj != NULL && last->n == n && memcmp(last->p, p, (size_t)n) == 0) {
        last->p = p; /* the buffer outlives the call */
        Py_INCREF(last->obj);
        return last->obj;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    if (s == NULL) return NULL;
    PyObject *got = PyDict_SetDefault(table, s, s);
    Py_DECREF(s);
    if (got == NULL) return NULL;
    last->p = p;
    last->n = n;
    last->obj = got;
    Py_INCREF(got);
    return got;
}

/* Try the fast path on one chunk. Returns a new Record, or NULL with no error set when the chunk
 * must go to the general path, or NULL with an error set on a real failure (memory). */
static PyObject *fast_record(const unsigned char *c, Py_ssize_t n, Py_ssize_t pos,
                             PyObject *table, last_str *lasts) {
    if (n < 14 || c[0] == '\n' || c[0] == '\r' || memcmp(c + n - 13, ";crc=", 5) != 0)
        return NULL;
    uint32_t want = 0;
    for (int i = 0; i < 8; i++) {
        int v = hexval(c[n - 8 + i]);
        if (v < 0) return NULL;
        want = want << 4 | (uint32_t)v;
    }
    Py_ssize_t blen = n - 13;
    if (crc32_of(c, blen) != want) return NULL;
    const unsigned char *f[8];
    Py_ssize_t flen[8];
    const unsigned char *p = c, *bend = c + blen;
    for (int i = 0; i < 7; i++) {
        const unsigned char *q = memchr(p, 0x1f, (size_t)(bend - p));
        if (q == NULL) return NULL;
        f[i] = p;
        flen[i] = q - p;
        p = q + 1;
    }
    if (memchr(p, 0x1f, (size_t)(bend - p)) != NULL) return NULL;
    f[7] = p;
    flen[7] = bend - p;
    /* node, target, field non-empty */
    if (flen[1] == 0 || flen[4] == 0 || flen[5] == 0) return NULL;
    /* causality: hlc=<16 hex>;seq=<1..19 digits>;t=<s|j|d> */
    const unsigned char *cs = f[7];
    Py_ssize_t cn = flen[7];
    if (cn < 4 + 16 + 5 + 1 + 4 || memcmp(cs, "hlc=", 4) != 0 || memcmp(cs + 20, ";seq=", 5) != 0 ||
        memcmp(cs + cn - 4, ";t=", 3) != 0)
        return NULL;
    unsigned char kind = cs[cn - 1];
    if (kind != 's' && kind != 'j' && kind != 'd') return NULL;
    unsigned long long hlc = 0;
    for (int i = 0; i < 16; i++) {
        int v = hexval(cs[4 + i]);
        if (v < 0) return NULL;
        hlc = hlc << 4 | (unsigned long long)v;
    }
    Py_ssize_t sn = cn - 4 - 25;
    if (sn < 1 || sn > 19) return NULL;
    unsigned long long seq = 0;
    for (Py_ssize_t i = 0; i < sn; i++) {
        unsigned char d = cs[25 + i];
        if (d < '0' || d > '9') return NULL;
        seq = seq * 10 + (unsigned long long)(d - '0');
    }
    if (seq == 0) return NULL;

    PyObject *v[F_COUNT] = {NULL};
    /* Decoding errors (not UTF-8) are not ours to report: clear and take the general path. */
    v[F_VALUE] = PyUnicode_DecodeUTF8((const char *)f[6], flen[6], NULL);
    if (v[F_VALUE] == NULL) goto fallback;
    if (kind == 'j' && !json_surely_valid(f[6], flen[6])) {
        PyObject *r = PyObject_CallOneArg(json_loads, v[F_VALUE]);
        if (r == NULL) goto fallback; /* the general path reports it (or raises the same) */
        Py_DECREF(r);
    }
    v[F_TS] = PyUnicode_DecodeUTF8((const char *)f[0], flen[0], NULL);
    if (v[F_TS] == NULL) goto fallback;
    v[F_TARGET] = PyUnicode_DecodeUTF8((const char *)f[4], flen[4], NULL);
    if (v[F_TARGET] == NULL) goto fallback;
    if ((v[F_NODE] = shared(&lasts[0], table, f[1], flen[1])) == NULL) goto fallback;
    if ((v[F_CAMPAIGN] = shared(&lasts[1], table, f[2], flen[2])) == NULL) goto fallback;
    if ((v[F_ENV] = shared(&lasts[2], table, f[3], flen[3])) == NULL) goto fallback;
    if ((v[F_FIELD] = shared(&lasts[3], table, f[5], flen[5])) == NULL) goto fallback;
    if ((v[F_KIND] = PyUnicode_FromStringAndSize((const char *)&kind, 1)) == NULL) goto error;
    if ((v[F_HLC] = PyLong_FromUnsignedLongLong(hlc)) == NULL) goto error;
    if ((v[F_SEQ] = PyLong_FromUnsignedLongLong(seq)) == NULL) goto error;
    if ((v[F_POS] = PyLong_FromSsize_t(pos)) == NULL) goto error;
    PyObject *r = record_type->tp_alloc(record_type, 0);
    if (r == NULL) goto error;
    for (int i = 0; i < F_COUNT; i++) *(PyObject **)((char *)r + slot_offset[i]) = v[i];
    return r;
fallback:
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) goto error;
    PyErr_Clear();
error:
    for (int i = 0; i < F_COUNT; i++) Py_XDECREF(v[i]);
    return NULL;
}

static PyObject *decode_buffer(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t end, first_pos;
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastjournal.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nn", &buf, &end, &first_pos)) return NULL;
    PyObject *records = NULL, *bad = NULL, *table = NULL, *result = NULL;
    if (end < 0 || end > buf.len) {
        PyErr_SetString(PyExc_ValueError, "end outside the buffer");
        goto done;
    }
    records = PyList_New(0);
    bad = PyList_New(0);
    table = PyDict_New();
    if (records == NULL || bad == NULL || table == NULL) goto done;
    last_str lasts[4] = {{NULL, 0, NULL}};
    const unsigned char *p = buf.buf, *stop = (const unsigned char *)buf.buf + end;
    Py_ssize_t pos = first_pos;
    while (p < stop) {
        const unsigned char *q = memchr(p, 0x1e, (size_t)(stop - p));
        if (q == NULL) break; /* bytes after the last separator are not a record */
        PyObject *r = fast_record(p, q - p, pos, table, lasts);
        if (r == NULL) {
            if (PyErr_Occurred()) goto done;
            PyObject *chunk = PyBytes_FromStringAndSize((const char *)p, q - p);
            if (chunk == NULL) goto done;
            PyObject *pos_obj = PyLong_FromSsize_t(pos);
            if (pos_obj == NULL) {
                Py_DECREF(chunk);
                goto done;
            }
            r = PyObject_CallFunctionObjArgs(general, chunk, pos_obj, NULL);
            Py_DECREF(chunk);
            Py_DECREF(pos_obj);
            if (r == NULL) goto done;
            if (r == Py_None) {
                Py_DECREF(r);
                r = NULL;
            } else if (r == Py_False) {
                Py_DECREF(r);
                r = NULL;
                PyObject *i = PyLong_FromSsize_t(pos - first_pos);
                if (i == NULL || PyList_Append(bad, i) < 0) {
                    Py_XDECREF(i);
                    goto done;
                }
                Py_DECREF(i);
            }
        }
        if (r != NULL) {
            int rc = PyList_Append(records, r);
            Py_DECREF(r);
            if (rc < 0) goto done;
        }
        pos++;
        p = q + 1;
    }
    result = PyTuple_Pack(2, records, bad);
done:
    Py_XDECREF(records);
    Py_XDECREF(bad);
    Py_XDECREF(table);
    PyBuffer_Release(&buf);
    return result;
}

/* --- the common case of Overlay.apply_all ------------------------------------------------- */
/* A Record whose key is new to the overlay and whose seq is the next in line for its origin (or
 * a cocli record, seq 0): store it. Everything else goes to overlay.apply(record), the Python
 * definition, before anything was changed for it. Returns (applied, entries) of the records
 * handled here; overlay.apply counts its own. */

#define SLOT(r, i) (*(PyObject **)((char *)(r) + slot_offset[i]))

static PyObject *apply_fresh(PyObject *self, PyObject *args) {
    PyObject *records, *origins, *by_target, *apply;
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastjournal.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O", &PyList_Type, &records, &PyDict_Type, &origins,
                          &PyDict_Type, &by_target, &apply))
        return NULL;
    static PyObject *s_contiguous = NULL, *s_above = NULL;
    if (s_contiguous == NULL && (s_contiguous = PyUnicode_InternFromString("contiguous")) == NULL)
        return NULL;
    if (s_above == NULL && (s_above = PyUnicode_InternFromString("above")) == NULL) return NULL;
    Py_ssize_t applied = 0, entries = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *r = PyList_GET_ITEM(records, i);
        Py_INCREF(r);
        PyObject *seqs = NULL;
        long long next = 0;
        if (!Py_IS_TYPE(r, record_type)) goto slow;
        PyObject *seq = SLOT(r, F_SEQ), *node = SLOT(r, F_NODE);
        PyObject *target = SLOT(r, F_TARGET), *field = SLOT(r, F_FIELD);
        if (seq == NULL || node == NULL || target == NULL || field == NULL ||
            !PyLong_CheckExact(seq) || !PyUnicode_CheckExact(node) ||
            !PyUnicode_CheckExact(target) || !PyUnicode_CheckExact(field))
            goto slow;
        int overflow = 0;
        long long s = PyLong_AsLongLongAndOverflow(seq, &overflow);
        if (overflow || s < 0) goto slow;
        if (s) {
            seqs = PyDict_GetItemWithError(origins, node); /* borrowed */
            if (seqs == NULL) {
                if (PyErr_Occurred()) goto error;
                goto slow;
            }
            PyObject *cont = PyObject_GetAttr(seqs, s_contiguous);
            if (cont == NULL) goto error;
            long long c = PyLong_CheckExact(cont) ? PyLong_AsLongLongAndOverflow(cont, &overflow)
                                                  : -1;
            Py_DECREF(cont);
            if (overflow || c < 0 || s != c + 1) goto slow;
            PyObject *above = PyObject_GetAttr(seqs, s_above);
            if (above == NULL) goto error;
            int nonempty = PyObject_IsTrue(above);
            Py_DECREF(above);
            if (nonempty != 0) {
                if (nonempty < 0) goto error;
                goto slow;
            }
            next = s;
        }
        PyObject *fields = PyDict_GetItemWithError(by_target, target); /* borrowed */
        if (fields == NULL && PyErr_Occurred()) goto error;
        if (fields != NULL) {
            if (!PyDict_CheckExact(fields)) goto slow;
            PyObject *cur = PyDict_GetItemWithError(fields, field);
            if (cur != NULL) goto slow; /* an existing entry: last-write-wins in Python */
            if (PyErr_Occurred()) goto error;
        }
        /* Commit: the sequence number, then the new entry. */
        if (next) {
            PyObject *n = PyLong_FromLongLong(next);
            if (n == NULL) goto error;
            int rc = PyObject_SetAttr(seqs, s_contiguous, n);
            Py_DECREF(n);
            if (rc < 0) goto error;
        }
        applied++;
        if (fields == NULL) {
            PyObject *d = PyDict_New();
            if (d == NULL) goto error;
            int rc = PyDict_SetItem(by_target, target, d);
            Py_DECREF(d);
            if (rc < 0) goto error;
            fields = d; /* now owned by by_target */
        }
        Py_INCREF(field);
        PyUnicode_InternInPlace(&field);
        int rc = PyDict_SetItem(fields, field, r);
        Py_DECREF(field);
        if (rc < 0) goto error;
        entries++;
        Py_DECREF(r);
        continue;
    slow: {
        PyObject *out = PyObject_CallOneArg(apply, r);
        if (out == NULL) goto error;
        Py_DECREF(out);
        Py_DECREF(r);
        continue;
    }
    error:
        Py_DECREF(r);
        return NULL;
    }
    return Py_BuildValue("nn", applied, entries);
}

static PyObject *py_crc32(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    uint32_t c = crc32_of(buf.buf, buf.len);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(record_class, general, json_loads): what decode_buffer builds and falls back to."},
    {"decode_buffer", decode_buffer, METH_VARARGS,
     "decode_buffer(data, end, first_pos) -> (records, bad chunk indexes) for data[:end]."},
    {"apply_fresh", apply_fresh, METH_VARARGS,
     "apply_fresh(records, origins, by_target, apply) -> (applied, entries) handled in C."},
    {"crc32", py_crc32, METH_VARARGS, "crc32(data) -> zlib's CRC-32 of data (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastjournal",
                                    "C accelerator for journal replay (optional).", -1, methods};

PyMODINIT_FUNC PyInit__fastjournal(void) {
    crc_init();
    return PyModule_Create(&module);
}
