/* The router classifier's hot paths in C, each the twin of a Python reference that gives the
 * same answers (tests/test_classifier.py compares them on every corpus message and on
 * generated text).  What a feature IS stays in Python (text.py, cues.py).
 *
 * Scorer: sums a message's feature weights and makes the decision, bit for bit as
 * scoring.PythonScorer does.  In Python each feature costs a dict look-up plus a 544-bit
 * integer addition (about a thousand instructions) and the decision seventeen exponentials;
 * together that is about 40 % of a classify() call.  Here it is a few instructions per
 * feature.  It only receives the analysis text.analyse() made.
 *
 * Scorer(rows, intents, span_stops, tables, ngrams, bias_row, fixed_point_scale,
 *        confidence_steps, thai_block_start, run_edge)
 *   rows        bytes: one row of `intents` native int32 fixed-point weights per feature
 *   span_stops  tuple: the end of each tier's run of intents (intents are grouped by tier)
 *   tables      tuple of dicts, one per feature family: key -> row index
 *   ngrams      dict: Thai trigram code -> row index (codes as text._thai_ngram_code makes)
 *   bias_row    row index of the bias feature, -1 when the model has none
 * decide(analysis) -> (intent, tier, confidence in steps)
 *   analysis    tuple: the Thai runs (list of str), then one iterable of keys per table
 *
 * PhraseMatcher(phrases: dict[str, object]).find(text) -> list of the values of the phrases
 *   found, leftmost first, the longest at each position, not overlapping: what findall()
 *   of cues._TH_RE (a regex shaped like a trie) finds, looked up in `phrases`.  The regex
 *   costs ~400 instructions per character of Thai text; a trie walk a few dozen.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_INTENTS 64
#define MAX_TIERS 8
#define NGRAM_CHARS 3 /* Thai trigrams; exported so scoring.py can check text.py agrees */
#define CODE_BYTES 4 /* a trigram code is a native unsigned int: 3 character bytes and a 0 */

typedef struct {
    PyObject_HEAD
    int intents;
    int tiers;
    Py_ssize_t span_stops[MAX_TIERS];
    double fixed_point_scale;
    double confidence_steps;
    int32_t *rows;
    Py_ssize_t row_count;
    Py_ssize_t bias_row;
    PyObject *tables;
    /* Thai trigrams: open addressing, linear probing; a slot is empty when its row is -1. */
    uint32_t *ngram_codes;
    int32_t *ngram_rows;
    uint32_t ngram_mask;
    int ngram_bits;
    Py_UCS4 thai_block_start;
    unsigned char run_edge;
} Scorer;

static void
Scorer_dealloc(Scorer *self)
{
    PyMem_Free(self->rows);
    PyMem_Free(self->ngram_codes);
    PyMem_Free(self->ngram_rows);
    Py_XDECREF(self->tables);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Fibonacci hashing: the top `bits` bits of key * 2^64/phi.  The top bits, because the low
 * bits of a product depend only on the low bits of the key. */
static inline uint64_t
fibonacci_slot(uint64_t key, int bits)
{
    return (key * 0x9E3779B97F4A7C15u) >> (64 - bits);
}

/* The smallest power of two at least twice `count` (tables stay at most half full), and its
 * log2 in `bits`. */
static uint64_t
table_size(Py_ssize_t count, int *bits)
{
    uint64_t size = 16;
    for (*bits = 4; size < 2 * (uint64_t)count; (*bits)++)
        size <<= 1;
    return size;
}

/* A row index from a table, checked once at construction so decide() can trust it. */
static Py_ssize_t
checked_row(Scorer *self, PyObject *value)
{
    Py_ssize_t row = PyLong_AsSsize_t(value);
    if (row == -1 && PyErr_Occurred())
        return -1;
    if (row < 0 || row >= self->row_count) {
        PyErr_Format(PyExc_ValueError, "row index %zd outside 0..%zd", row, self->row_count - 1);
        return -1;
    }
    return row;
}

static int
set_span_stops(Scorer *self, PyObject *stops)
{
    Py_ssize_t tiers = PyTuple_GET_SIZE(stops), previous = 0;
    if (tiers < 1 || tiers > MAX_TIERS) {
        PyErr_Format(PyExc_ValueError, "1 to %d tiers, not %zd", MAX_TIERS, tiers);
        return -1;
    }
    for (Py_ssize_t t = 0; t < tiers; t++) {
        Py_ssize_t stop = PyLong_AsSsize_t(PyTuple_GET_ITEM(stops, t));
        if (stop == -1 && PyErr_Occurred())
            return -1;
        if (stop <= previous || stop > self->intents) {
            PyErr_SetString(PyExc_ValueError, "span stops must rise, ending at the intent count");
            return -1;
        }
        self->span_stops[t] = previous = stop;
    }
    if (previous != self->intents) {
        PyErr_SetString(PyExc_ValueError, "span stops must end at the intent count");
        return -1;
    }
    self->tiers = (int)tiers;
    return 0;
}

static int
set_ngrams(Scorer *self, PyObject *ngrams)
{
    uint64_t size = table_size(PyDict_GET_SIZE(ngrams), &self->ngram_bits);
    self->ngram_mask = (uint32_t)(size - 1);
    self->ngram_codes = PyMem_Calloc(size, sizeof(uint32_t));
    self->ngram_rows = PyMem_Malloc(size * sizeof(int32_t));
    if (!self->ngram_codes || !self->ngram_rows) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint64_t i = 0; i < size; i++)
        self->ngram_rows[i] = -1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(ngrams, &pos, &key, &value)) {
        unsigned long code = PyLong_AsUnsignedLong(key);
        if (code == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        if (code > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a trigram code must fit 32 bits");
            return -1;
        }
        Py_ssize_t row = checked_row(self, value);
        if (row < 0)
            return -1;
        uint32_t slot = (uint32_t)fibonacci_slot(code, self->ngram_bits);
        while (self->ngram_rows[slot] >= 0)
            slot = (slot + 1) & self->ngram_mask;
        self->ngram_codes[slot] = (uint32_t)code;
        self->ngram_rows[slot] = (int32_t)row;
    }
    return 0;
}

static int
check_tables(Scorer *self, PyObject *tables)
{
    for (Py_ssize_t f = 0; f < PyTuple_GET_SIZE(tables); f++) {
        PyObject *table = PyTuple_GET_ITEM(tables, f), *key, *value;
        if (!PyDict_Check(table)) {
            PyErr_SetString(PyExc_TypeError, "each table must be a dict");
            return -1;
        }
        Py_ssize_t pos = 0;
        while (PyDict_Next(table, &pos, &key, &value))
            if (checked_row(self, value) < 0)
                return -1;
    }
    return 0;
}

static int
Scorer_init(Scorer *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"rows", "intents", "span_stops", "tables", "ngrams", "bias_row",
                               "fixed_point_scale", "confidence_steps", "thai_block_start",
                               "run_edge", NULL};
    Py_buffer rows;
    PyObject *stops, *tables, *ngrams;
    int intents, confidence_steps, run_edge;
    unsigned int thai_block_start;
    Py_ssize_t bias_row;
    double scale;
    if (self->rows) {
        PyErr_SetString(PyExc_RuntimeError, "a Scorer is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*iO!O!O!ndiIi", keywords, &rows, &intents,
                                     &PyTuple_Type, &stops, &PyTuple_Type, &tables,
                                     &PyDict_Type, &ngrams, &bias_row, &scale,
                                     &confidence_steps, &thai_block_start, &run_edge))
        return -1;
    int result = -1;
    Py_ssize_t row_bytes = (Py_ssize_t)sizeof(int32_t) * intents;
    if (intents < 1 || intents > MAX_INTENTS || rows.len == 0 || rows.len % row_bytes != 0) {
        PyErr_Format(PyExc_ValueError, "rows must hold whole rows of 1 to %d intents", MAX_INTENTS);
        goto done;
    }
    if (run_edge < 0 || run_edge > UCHAR_MAX) {
        PyErr_SetString(PyExc_ValueError, "run_edge must be a byte");
        goto done;
    }
    self->intents = intents;
    self->row_count = rows.len / row_bytes;
    self->rows = PyMem_Malloc((size_t)rows.len);
    if (!self->rows) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(self->rows, rows.buf, (size_t)rows.len);
    if (bias_row != -1 && (bias_row < 0 || bias_row >= self->row_count)) {
        PyErr_SetString(PyExc_ValueError, "bias_row outside the rows");
        goto done;
    }
    self->bias_row = bias_row;
    self->fixed_point_scale = scale;
    self->confidence_steps = confidence_steps;
    self->thai_block_start = thai_block_start;
    self->run_edge = (unsigned char)run_edge;
    if (set_span_stops(self, stops) < 0 || check_tables(self, tables) < 0
        || set_ngrams(self, ngrams) < 0)
        goto done;
    Py_INCREF(tables);
    self->tables = tables;
    result = 0;
done:
    PyBuffer_Release(&rows);
    return result;
}

static inline void
add_row(const Scorer *self, int64_t *scores, Py_ssize_t row)
{
    const int32_t *weights = self->rows + row * self->intents;
    for (int k = 0; k < self->intents; k++)
        scores[k] += weights[k];
}

/* Adds the weights of every key found in `table`; returns the number of keys, -1 on error. */
static Py_ssize_t
add_family(const Scorer *self, int64_t *scores, PyObject *table, PyObject *keys)
{
    PyObject *iterator = PyObject_GetIter(keys), *key;
    Py_ssize_t count = 0;
    if (!iterator)
        return -1;
    while ((key = PyIter_Next(iterator))) {
        PyObject *row = PyDict_GetItemWithError(table, key); /* borrowed */
        Py_DECREF(key);
        count++;
        if (row)
            add_row(self, scores, PyLong_AsSsize_t(row));
        else if (PyErr_Occurred())
            break;
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? -1 : count;
}

/* The byte character i of a Thai run stands for (its offset in the Thai block), run_edge just
 * outside the run, -1 for a character outside the block. */
static inline int
run_byte(const Scorer *self, int kind, const void *data, Py_ssize_t length, Py_ssize_t i)
{
    if (i < 0 || i >= length)
        return self->run_edge;
    Py_UCS4 offset = PyUnicode_READ(kind, data, i) - self->thai_block_start; /* wraps below */
    return offset < self->run_edge ? (int)offset : -1;
}

/* One Thai run, padded by run_edge on both sides: a trigram at every character. */
static int
add_thai_run(const Scorer *self, int64_t *scores, PyObject *run)
{
    if (!PyUnicode_Check(run)) {
        PyErr_SetString(PyExc_TypeError, "a Thai run must be a str");
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(run);
    int kind = PyUnicode_KIND(run);
    const void *data = PyUnicode_DATA(run);
    for (Py_ssize_t i = 0; i < length; i++) {
        int before = run_byte(self, kind, data, length, i - 1);
        int at = run_byte(self, kind, data, length, i);
        int after = run_byte(self, kind, data, length, i + 1);
        if ((before | at | after) < 0) {
            PyErr_SetString(PyExc_ValueError, "a Thai run holds a character outside the block");
            return -1;
        }
        unsigned char chars[CODE_BYTES] = {(unsigned char)before, (unsigned char)at,
                                           (unsigned char)after, 0};
        uint32_t code;
        memcpy(&code, chars, CODE_BYTES); /* the same native unsigned int as text._ngram_codes */
        uint32_t slot = (uint32_t)fibonacci_slot(code, self->ngram_bits);
        for (int32_t row; (row = self->ngram_rows[slot]) >= 0; slot = (slot + 1) & self->ngram_mask) {
            if (self->ngram_codes[slot] == code) {
                add_row(self, scores, row);
                break;
            }
        }
    }
    return 0;
}

/* The decision from the summed scores, step by step as scoring.PythonScorer.decide makes it
 * (same operations in the same order, so the same doubles). */
static PyObject *
decision(const Scorer *self, const int64_t *scores, Py_ssize_t count)
{
    int64_t top = scores[0];
    for (int k = 1; k < self->intents; k++)
        if (scores[k] > top)
            top = scores[k];
    double unit = 1.0 / (self->fixed_point_scale * sqrt((double)count));
    double exps[MAX_INTENTS], running[MAX_INTENTS + 1];
    running[0] = 0.0;
    for (int k = 0; k < self->intents; k++) {
        exps[k] = exp((double)(scores[k] - top) * unit);
        running[k + 1] = running[k] + exps[k];
    }
    int tier = 0;
    double best = 0.0;
    for (int t = 0; t < self->tiers; t++) {
        double mass = running[self->span_stops[t]] - running[t ? self->span_stops[t - 1] : 0];
        if (t == 0 || mass > best) { /* the first tier wins a tie, as list.index does */
            best = mass;
            tier = t;
        }
    }
    Py_ssize_t start = tier ? self->span_stops[tier - 1] : 0, intent = start;
    for (Py_ssize_t k = start + 1; k < self->span_stops[tier]; k++)
        if (exps[k] > exps[intent])
            intent = k;
    double confidence = best / running[self->intents] * self->confidence_steps + 0.5;
    return Py_BuildValue("nin", intent, tier, (Py_ssize_t)confidence);
}

static PyObject *
Scorer_decide(Scorer *self, PyObject *analysis)
{
    if (!self->tables) {
        PyErr_SetString(PyExc_RuntimeError, "Scorer was not initialised");
        return NULL;
    }
    Py_ssize_t families = PyTuple_GET_SIZE(self->tables);
    if (!PyTuple_Check(analysis) || PyTuple_GET_SIZE(analysis) != families + 1) {
        PyErr_Format(PyExc_TypeError, "analysis must be a tuple of the Thai runs and %zd families",
                     families);
        return NULL;
    }
    int64_t scores[MAX_INTENTS] = {0};
    Py_ssize_t count = 1; /* the bias counts as a feature whether the model has it or not */
    if (self->bias_row >= 0)
        add_row(self, scores, self->bias_row);
    for (Py_ssize_t f = 0; f < families; f++) {
        Py_ssize_t found = add_family(self, scores, PyTuple_GET_ITEM(self->tables, f),
                                      PyTuple_GET_ITEM(analysis, f + 1));
        if (found < 0)
            return NULL;
        count += found;
    }
    PyObject *runs = PySequence_Fast(PyTuple_GET_ITEM(analysis, 0), "Thai runs must be a sequence");
    if (!runs)
        return NULL;
    for (Py_ssize_t r = 0; r < PySequence_Fast_GET_SIZE(runs); r++) {
        PyObject *run = PySequence_Fast_GET_ITEM(runs, r);
        if (add_thai_run(self, scores, run) < 0) {
            Py_DECREF(runs);
            return NULL;
        }
        count += PyUnicode_GET_LENGTH(run);
    }
    Py_DECREF(runs);
    return decision(self, scores, count);
}

static PyMethodDef Scorer_methods[] = {
    {"decide", (PyCFunction)Scorer_decide, METH_O,
     "decide(analysis) -> (intent, tier, confidence in steps)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScorerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.router.classifier._native.Scorer",
    .tp_doc = "The classifier's scorer in C (see the top of _native.c).",
    .tp_basicsize = sizeof(Scorer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scorer_init,
    .tp_dealloc = (destructor)Scorer_dealloc,
    .tp_methods = Scorer_methods,
};

/* --- PhraseMatcher ------------------------------------------------------------------------ */

/* A trie: node 0 is the root; an edge (node, character) -> child lives in an open-addressing
 * table keyed by node << 32 | character (+1, so that 0 marks an empty slot). */
typedef struct {
    PyObject_HEAD
    PyObject *values;       /* tuple: the value of each phrase, by phrase number */
    int32_t *node_phrase;   /* per node: the phrase ending there, or -1 */
    Py_ssize_t node_count;
    uint64_t *edge_keys;
    int32_t *edge_children;
    uint64_t edge_mask;
    int edge_bits;
} PhraseMatcher;

static void
PhraseMatcher_dealloc(PhraseMatcher *self)
{
    PyMem_Free(self->node_phrase);
    PyMem_Free(self->edge_keys);
    PyMem_Free(self->edge_children);
    Py_XDECREF(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline uint64_t
edge_key(Py_ssize_t node, Py_UCS4 ch)
{
    return ((uint64_t)node << 32 | ch) + 1;
}

/* The child of `node` along `ch`, or -1. */
static inline int32_t
child_of(const PhraseMatcher *self, Py_ssize_t node, Py_UCS4 ch)
{
    uint64_t key = edge_key(node, ch);
    for (uint64_t slot = fibonacci_slot(key, self->edge_bits); self->edge_keys[slot];
         slot = (slot + 1) & self->edge_mask)
        if (self->edge_keys[slot] == key)
            return self->edge_children[slot];
    return -1;
}

static int
PhraseMatcher_init(PhraseMatcher *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"phrases", NULL};
    PyObject *phrases;
    if (self->values) {
        PyErr_SetString(PyExc_RuntimeError, "a PhraseMatcher is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!", keywords, &PyDict_Type, &phrases))
        return -1;
    /* At most one node (and one edge) per character of all phrases, plus the root. */
    Py_ssize_t pos = 0, chars = 0;
    PyObject *phrase, *value;
    while (PyDict_Next(phrases, &pos, &phrase, &value)) {
        if (!PyUnicode_Check(phrase) || PyUnicode_GET_LENGTH(phrase) == 0) {
            PyErr_SetString(PyExc_ValueError, "phrases must be non-empty str");
            return -1;
        }
        chars += PyUnicode_GET_LENGTH(phrase);
    }
    uint64_t size = table_size(chars, &self->edge_bits);
    self->edge_mask = size - 1;
    self->edge_keys = PyMem_Calloc(size, sizeof(uint64_t));
    self->edge_children = PyMem_Malloc(size * sizeof(int32_t));
    self->node_phrase = PyMem_Malloc((size_t)(chars + 1) * sizeof(int32_t));
    self->values = PyTuple_New(PyDict_GET_SIZE(phrases));
    if (!self->edge_keys || !self->edge_children || !self->node_phrase) {
        PyErr_NoMemory();
        return -1;
    }
    if (!self->values)
        return -1;
    self->node_phrase[0] = -1;
    self->node_count = 1;
    pos = 0;
    for (Py_ssize_t number = 0; PyDict_Next(phrases, &pos, &phrase, &value); number++) {
        Py_ssize_t node = 0;
        for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(phrase); i++) {
            Py_UCS4 ch = PyUnicode_READ_CHAR(phrase, i);
            int32_t child = child_of(self, node, ch);
            if (child < 0) {
                uint64_t key = edge_key(node, ch), slot = fibonacci_slot(key, self->edge_bits);
                while (self->edge_keys[slot])
                    slot = (slot + 1) & self->edge_mask;
                child = (int32_t)self->node_count++;
                self->node_phrase[child] = -1;
                self->edge_keys[slot] = key;
                self->edge_children[slot] = child;
            }
            node = child;
        }
        self->node_phrase[node] = (int32_t)number;
        Py_INCREF(value);
        PyTuple_SET_ITEM(self->values, number, value);
    }
    return 0;
}

static PyObject *
PhraseMatcher_find(PhraseMatcher *self, PyObject *text)
{
    if (!self->values) {
        PyErr_SetString(PyExc_RuntimeError, "PhraseMatcher was not initialised");
        return NULL;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "text must be a str");
        return NULL;
    }
    PyObject *found = PyList_New(0);
    if (!found)
        return NULL;
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t start = 0; start < length;) {
        /* The longest phrase starting here: walk the trie, remember the last phrase end. */
        Py_ssize_t node = 0, end = -1;
        int32_t phrase = -1;
        for (Py_ssize_t i = start; i < length; i++) {
            int32_t child = child_of(self, node, PyUnicode_READ(kind, data, i));
            if (child < 0)
                break;
            node = child;
            if (self->node_phrase[node] >= 0) {
                phrase = self->node_phrase[node];
                end = i + 1;
            }
        }
        if (phrase < 0) {
            start++;
            continue;
        }
        if (PyList_Append(found, PyTuple_GET_ITEM(self->values, phrase)) < 0) {
            Py_DECREF(found);
            return NULL;
        }
        start = end;
    }
    return found;
}

static PyMethodDef PhraseMatcher_methods[] = {
    {"find", (PyCFunction)PhraseMatcher_find, METH_O,
     "find(text) -> the values of the phrases found, leftmost-longest, not overlapping"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PhraseMatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.router.classifier._native.PhraseMatcher",
    .tp_doc = "Finds phrases as a trie-shaped regex's findall() would (see _native.c).",
    .tp_basicsize = sizeof(PhraseMatcher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PhraseMatcher_init,
    .tp_dealloc = (destructor)PhraseMatcher_dealloc,
    .tp_methods = PhraseMatcher_methods,
};

/* --- the module ---------------------------------------------------------------------------- */

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, .m_name = "_native",
    .m_doc = "The router classifier's hot paths in C.", .m_size = -1,
};

static int
add_type(PyObject *module, const char *name, PyTypeObject *type)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module = PyModule_Create(&native_module);
    if (!module)
        return NULL;
    if (PyModule_AddIntConstant(module, "NGRAM_CHARS", NGRAM_CHARS) < 0
        || add_type(module, "Scorer", &ScorerType) < 0
        || add_type(module, "PhraseMatcher", &PhraseMatcherType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
