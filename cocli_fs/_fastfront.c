/* Optional accelerator for frontmatter._load_dumped: the front matter yaml_dump writes, read in
 * one pass over the text.
 *
 * The Python reader runs a line regex over the text (~15 µs for a 700-byte _index.md) and then a
 * Python loop over the rows (~25 µs); a field write to an entity not seen before pays both, on
 * the event loop. This file reads exactly the layout that reader accepts and returns the same
 * dict, or None for any text of another shape (the caller then tries its other readers):
 *
 *   key: value        key [A-Za-z_][A-Za-z0-9_-]*, then ":", spaces, a value
 *   key:              followed by zero or more "- value" items (none: null)
 *
 * where a value is one or more characters other than ASCII controls, not starting with a
 * space, not ending in a space or ":", without ": " inside. A value whose first character is
 * "unsure" (a quote, an indicator, a resolver's first character: the caller's table) is typed:
 * single-quoted strings here, values in the caller's ``known`` dict from it, any other through
 * the caller's Python ``scalar`` (which may answer ``fail``: then None). The caller checks what
 * is cheaper on the whole text first (it ends in a newline, has no " #", is printable).
 *
 * tests/test_frontmatter.py holds this and the pure-Python reader to PyYAML's answers and to
 * each other on random texts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
    PyObject *text;
    const unsigned char *unsure; /* 128 flags, one per ASCII character */
    PyObject *known, *scalar, *table, *fail;
} reader;

#define AT(r, i) PyUnicode_READ((r)->kind, (r)->data, (i))

static int printable(Py_UCS4 c) { return c >= 0x80 || (c >= 0x20 && c != 0x7f); }
static int key_start(Py_UCS4 c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static int key_char(Py_UCS4 c) { return key_start(c) || (c >= '0' && c <= '9') || c == '-'; }

/* The index of the newline that ends the value starting at i, or -1 when the rest of the line
 * is not a value. */
static Py_ssize_t value_end(const reader *r, Py_ssize_t i) {
    Py_ssize_t j = i;
    Py_UCS4 prev = 0;
    for (; j < r->n; j++) {
        Py_UCS4 c = AT(r, j);
        if (c == '\n') break;
        if (!printable(c) || (c == ' ' && prev == ':')) return -1;
        prev = c;
    }
    if (j >= r->n || j == i || prev == ' ' || prev == ':') return -1;
    return j;
}

/* The value text[a:b] as PyYAML constructs it: a new reference, r->fail (new reference) when
 * it is not in the simple shape, or NULL with an exception set. */
static PyObject *value_of(const reader *r, Py_ssize_t a, Py_ssize_t b) {
    Py_UCS4 c = AT(r, a);
    if (c >= 128 || !r->unsure[c]) return PyUnicode_Substring(r->text, a, b);
    if (c == '\'') {
        /* 'text', a quote inside written twice */
        if (b - a < 2 || AT(r, b - 1) != '\'') goto fail;
        int doubled = 0;
        for (Py_ssize_t j = a + 1; j < b - 1; j++) {
            if (AT(r, j) != '\'') continue;
            if (j + 1 >= b - 1 || AT(r, j + 1) != '\'') goto fail;
            doubled = 1;
            j++;
        }
        PyObject *inner = PyUnicode_Substring(r->text, a + 1, b - 1);
        if (inner == NULL || !doubled) return inner;
        PyObject *two = PyUnicode_FromString("''"), *one = PyUnicode_FromString("'");
        PyObject *out = (two && one) ? PyUnicode_Replace(inner, two, one, -1) : NULL;
        Py_XDECREF(two);
        Py_XDECREF(one);
        Py_DECREF(inner);
        return out;
    }
    PyObject *s = PyUnicode_Substring(r->text, a, b);
    if (s == NULL) return NULL;
    PyObject *v = PyDict_GetItemWithError(r->known, s); /* borrowed */
    if (v != NULL) {
        Py_INCREF(v);
        Py_DECREF(s);
        return v;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(s);
        return NULL;
    }
    v = PyObject_CallFunctionObjArgs(r->scalar, s, r->table, NULL);
    Py_DECREF(s);
    return v;
fail:
    Py_INCREF(r->fail);
    return r->fail;
}

/* load_dumped(text, unsure, known, scalar, table, fail) -> dict | None */
static PyObject *load_dumped(PyObject *self, PyObject *args) {
    reader r;
    Py_buffer unsure;
    if (!PyArg_ParseTuple(args, "Uy*O!OOO", &r.text, &unsure, &PyDict_Type, &r.known, &r.scalar,
                          &r.table, &r.fail))
        return NULL;
    if (unsure.len != 128) {
        PyBuffer_Release(&unsure);
        PyErr_SetString(PyExc_ValueError, "unsure: 128 flags expected");
        return NULL;
    }
    r.unsure = unsure.buf;
    r.kind = PyUnicode_KIND(r.text);
    r.data = PyUnicode_DATA(r.text);
    r.n = PyUnicode_GET_LENGTH(r.text);

    PyObject *out = PyDict_New(), *key = NULL, *value = NULL;
    if (out == NULL) goto error;
    Py_ssize_t i = 0;
    while (i < r.n) {
        Py_ssize_t k0 = i;
        if (!key_start(AT(&r, i))) goto none;
        while (i < r.n && key_char(AT(&r, i))) i++;
        if (i + 1 >= r.n || AT(&r, i) != ':') goto none;
        key = PyUnicode_Substring(r.text, k0, i);
        if (key == NULL) goto error;
        i++;
        if (AT(&r, i) == ' ') {
            while (i < r.n && AT(&r, i) == ' ') i++;
            Py_ssize_t e = value_end(&r, i);
            if (e < 0) goto none;
            value = value_of(&r, i, e);
            if (value == NULL) goto error;
            if (value == r.fail) goto none;
            i = e + 1;
        } else if (AT(&r, i) == '\n') {
            i++;
            /* "- item" lines; any other line starting with "-" is of another shape */
            while (i < r.n && AT(&r, i) == '-') {
                if (i + 2 >= r.n || AT(&r, i + 1) != ' ' || AT(&r, i + 2) == ' ') goto none;
                Py_ssize_t e = value_end(&r, i + 2);
                if (e < 0) goto none;
                PyObject *item = value_of(&r, i + 2, e);
                if (item == NULL) goto error;
                if (item == r.fail) {
                    Py_DECREF(item);
                    goto none;
                }
                if (value == NULL && (value = PyList_New(0)) == NULL) {
                    Py_DECREF(item);
                    goto error;
                }
                int bad = PyList_Append(value, item);
                Py_DECREF(item);
                if (bad) goto error;
                i = e + 1;
            }
            if (value == NULL) {
                value = Py_None;
                Py_INCREF(value);
            }
        } else {
            goto none;
        }
        int seen = PyDict_Contains(out, key);
        if (seen < 0) goto error;
        if (seen) goto none; /* a repeated key */
        if (PyDict_SetItem(out, key, value) < 0) goto error;
        Py_CLEAR(key);
        Py_CLEAR(value);
    }
    PyBuffer_Release(&unsure);
    return out;
none:
    Py_XDECREF(out);
    Py_XDECREF(key);
    Py_XDECREF(value);
    PyBuffer_Release(&unsure);
    Py_RETURN_NONE;
error:
    Py_XDECREF(out);
    Py_XDECREF(key);
    Py_XDECREF(value);
    PyBuffer_Release(&unsure);
    return NULL;
}

static PyMethodDef methods[] = {
    {"load_dumped", load_dumped, METH_VARARGS,
     "load_dumped(text, unsure, known, scalar, table, fail) -> dict | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastfront", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastfront(void) { return PyModule_Create(&module); }
