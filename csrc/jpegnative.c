/*
 * kdecode._jpegnative: read the quantized DCT coefficients of a JPEG held in memory with
 * libjpeg-turbo (jpeg_read_coefficients), in one entropy-decoding pass, into arrays the caller
 * has already allocated from the frame header.
 *
 * Safety rules this file follows:
 * - libjpeg reports errors through error_exit, which must not return: ours longjmps back into
 *   read_blocks(), the only function that calls setjmp, so no exception and no exit() ever
 *   crosses libjpeg's frames, and the jump never crosses Python's.
 * - Nothing here touches a Python object while the GIL is released: the buffers are acquired
 *   before and released after the decoding section.
 * - Resource guards: the only image-sized memory is the caller's arrays, sized from the frame
 *   header the marker parser checked against the pixel limit (libjpeg's own allocations here
 *   are tables and decoder state); the progress monitor stops a file with more than max_scans
 *   scans (a progressive file with thousands of scans would re-walk the image for each).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* Outcome of read_blocks(), mapped to kdecode exceptions on the Python side. */
enum {
    STATUS_OK = 0,
    STATUS_ERROR = 1,         /* libjpeg refused the data (its message says why) */
    STATUS_CORRUPT = 2,       /* a corrupt-data warning, with stop_on_warning set */
    STATUS_TOO_MANY_SCANS = 3,
    STATUS_MISMATCH = 4,      /* libjpeg's frame differs from the marker parser's */
};

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int stop_on_warning;
    long warnings;            /* corrupt-data warnings seen */
    int status;
    char message[JMSG_LENGTH_MAX + 64];
} reader_error;

typedef struct {
    struct jpeg_progress_mgr pub;
    int max_scans;
} reader_progress;

static void fail(j_common_ptr cinfo, int status)
{
    reader_error *err = (reader_error *)cinfo->err;
    err->status = status;
    longjmp(err->jump, 1);
}

static void on_error_exit(j_common_ptr cinfo)
{
    reader_error *err = (reader_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    fail(cinfo, STATUS_ERROR);
}

/* Warnings that say nothing about the coefficients (metadata only): not counted. */
static int harmless_warning(int code)
{
    return code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM;
}

static void on_emit_message(j_common_ptr cinfo, int msg_level)
{
    reader_error *err = (reader_error *)cinfo->err;
    if (msg_level >= 0 || harmless_warning(cinfo->err->msg_code))
        return; /* trace messages */
    err->warnings++;
    if (err->warnings == 1)
        (*cinfo->err->format_message)(cinfo, err->message);
    if (err->stop_on_warning)
        fail(cinfo, STATUS_CORRUPT); /* no point decoding the rest: the caller will refuse it */
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print on the process's stderr */
}

static void on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
    reader_progress *progress = (reader_progress *)cinfo->progress;
    reader_error *err = (reader_error *)cinfo->err;
    if (progress->max_scans > 0 && dinfo->input_scan_number > progress->max_scans) {
        snprintf(err->message, sizeof err->message, "more than %d scans", progress->max_scans);
        fail(cinfo, STATUS_TOO_MANY_SCANS);
    }
}

/* Our coefficient arrays: libjpeg's own (jmemmgr.c) are private to it, so this translation unit
   gives the opaque type its own definition. Rows point into the caller's buffer. */
struct jvirt_barray_control {
    JBLOCKARRAY rows;
    JDIMENSION n_rows, blocks_per_row;  /* padded to whole MCUs */
    JDIMENSION own_rows, own_blocks_per_row; /* the component's own grid */
    JDIMENSION first_undef_row;  /* rows below it are zeroed (or decoded) */
    JDIMENSION packed_rows;      /* rows below it are moved to the unpadded layout, see pack_rows() */
};

/* Zero rows up to `end` that nothing has written yet. Done as libjpeg first reaches them, so the
   decoder writes into memory that is already in cache (the caller's arrays are np.empty). */
static void define_rows(jvirt_barray_ptr array, JDIMENSION end)
{
    if (end > array->first_undef_row) {
        memset(array->rows[array->first_undef_row], 0,
               (size_t)(end - array->first_undef_row) * array->blocks_per_row * sizeof(JBLOCK));
        array->first_undef_row = end;
    }
}

/* Drop the MCU padding of the rows below `end`: each row's own blocks move to where the unpadded
   [own_rows, own_blocks_per_row] layout has them, in place. Moving left row by row never
   overwrites a row not yet moved, nor any row at or past `end` (row r lands before r * padded). */
static void pack_rows(jvirt_barray_ptr array, JDIMENSION end)
{
    size_t row_bytes = (size_t)array->own_blocks_per_row * sizeof(JBLOCK);
    JDIMENSION row;

    if (end > array->own_rows)
        end = array->own_rows;
    if (array->own_blocks_per_row != array->blocks_per_row)
        for (row = array->packed_rows > 1 ? array->packed_rows : 1; row < end; row++)
            memmove((char *)array->rows[0] + row * row_bytes, array->rows[row], row_bytes);
    if (end > array->packed_rows)
        array->packed_rows = end;
}

typedef struct {
    const unsigned char *data;
    size_t size;
    int n_planes;
    Py_buffer *planes;        /* int16 [blocks_h, blocks_w, 8, 8], padded to whole MCUs */
    unsigned short *qtables;  /* [n_planes, 64], natural order */
    int max_scans;
    int n_requested;          /* coefficient arrays handed to libjpeg so far */
    int single_scan;          /* one scan with every component: rows above the one libjpeg asks for are final */
    int scans;                /* scans libjpeg read (the marker parser stops at the first) */
    unsigned int restart_interval; /* the last DRI's */
    reader_error err;
} read_job;

/*
 * jpeg_read_coefficients asks the memory manager for one whole-image block array per component
 * and decodes every scan straight into it. Handing it the caller's arrays instead of letting it
 * allocate its own, then copying out, saves an allocation and a pass over all the coefficients.
 * Only the three block-array methods are replaced; everything else, including freeing, stays
 * libjpeg's.
 */
static jvirt_barray_ptr request_caller_barray(j_common_ptr cinfo, int pool_id, boolean pre_zero,
                                              JDIMENSION blocks_per_row, JDIMENSION n_rows,
                                              JDIMENSION maxaccess)
{
    read_job *job = (read_job *)cinfo->client_data;
    reader_error *err = (reader_error *)cinfo->err;
    jvirt_barray_ptr array;
    Py_buffer *plane;
    JDIMENSION row;
    (void)pre_zero; /* always zeroed, see define_rows() */
    (void)maxaccess;

    if (job->n_requested >= job->n_planes) {
        snprintf(err->message, sizeof err->message, "libjpeg asked for more than %d coefficient arrays",
                 job->n_planes);
        fail(cinfo, STATUS_MISMATCH);
    }
    plane = &job->planes[job->n_requested];
    if ((Py_ssize_t)n_rows != plane->shape[0] || (Py_ssize_t)blocks_per_row != plane->shape[1]) {
        snprintf(err->message, sizeof err->message,
                 "libjpeg wants component %d as %ux%u blocks, the marker parser %zdx%zd",
                 job->n_requested, n_rows, blocks_per_row, plane->shape[0], plane->shape[1]);
        fail(cinfo, STATUS_MISMATCH);
    }
    job->n_requested++;
    array = (*cinfo->mem->alloc_small)(cinfo, pool_id, sizeof(struct jvirt_barray_control));
    array->rows = (*cinfo->mem->alloc_small)(cinfo, pool_id, n_rows * sizeof(JBLOCKROW));
    array->n_rows = n_rows;
    array->blocks_per_row = blocks_per_row;
    array->own_rows = ((j_decompress_ptr)cinfo)->comp_info[job->n_requested - 1].height_in_blocks;
    array->own_blocks_per_row = ((j_decompress_ptr)cinfo)->comp_info[job->n_requested - 1].width_in_blocks;
    array->first_undef_row = 0;
    array->packed_rows = 0;
    for (row = 0; row < n_rows; row++)
        array->rows[row] = (JBLOCKROW)plane->buf + (size_t)row * blocks_per_row;
    return array;
}

static void realize_nothing(j_common_ptr cinfo)
{
    (void)cinfo; /* our arrays exist already; libjpeg asks for no sample arrays here */
}

static JBLOCKARRAY access_caller_barray(j_common_ptr cinfo, jvirt_barray_ptr array, JDIMENSION start_row,
                                        JDIMENSION n_rows, boolean writable)
{
    (void)writable;
    if (start_row > array->n_rows || n_rows > array->n_rows - start_row)
        ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);
    /* A single scan decodes the rows in order, once: pack the finished ones while they are
       still in cache (a progressive file revisits every row; it is packed at the end). */
    if (((read_job *)cinfo->client_data)->single_scan) {
        if (start_row < array->packed_rows) /* never: a single scan goes forward */
            ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);
        pack_rows(array, start_row);
    }
    define_rows(array, start_row + n_rows);
    return array->rows + start_row;
}

/* Everything that calls into libjpeg; runs without the GIL. */
static void read_blocks(read_job *job)
{
    struct jpeg_decompress_struct cinfo;
    reader_progress progress;
    jvirt_barray_ptr *coef_arrays;
    int ci;

    cinfo.err = jpeg_std_error(&job->err.pub);
    job->err.pub.error_exit = on_error_exit;
    job->err.pub.emit_message = on_emit_message;
    job->err.pub.output_message = on_output_message;
    if (setjmp(job->err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.client_data = job;
    cinfo.mem->request_virt_barray = request_caller_barray;
    cinfo.mem->realize_virt_arrays = realize_nothing;
    cinfo.mem->access_virt_barray = access_caller_barray;
    progress.pub.progress_monitor = on_progress;
    progress.max_scans = job->max_scans;
    cinfo.progress = &progress.pub;
    jpeg_mem_src(&cinfo, job->data, (unsigned long)job->size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.num_components != job->n_planes) {
        snprintf(job->err.message, sizeof job->err.message,
                 "libjpeg sees %d components, the marker parser %d", cinfo.num_components, job->n_planes);
        fail((j_common_ptr)&cinfo, STATUS_MISMATCH);
    }
    job->single_scan = !cinfo.progressive_mode && cinfo.comps_in_scan == cinfo.num_components;
    coef_arrays = jpeg_read_coefficients(&cinfo);
    if (job->n_requested != job->n_planes) {
        snprintf(job->err.message, sizeof job->err.message, "libjpeg decoded %d of %d components",
                 job->n_requested, job->n_planes);
        fail((j_common_ptr)&cinfo, STATUS_MISMATCH);
    }

    for (ci = 0; ci < cinfo.num_components; ci++) {
        jpeg_component_info *comp = &cinfo.comp_info[ci];
        Py_buffer *plane = &job->planes[ci];
        JQUANT_TBL *qtable;
        int k;

        if ((void *)coef_arrays[ci]->rows[0] != plane->buf) {
            snprintf(job->err.message, sizeof job->err.message, "libjpeg returned component %d out of order", ci);
            fail((j_common_ptr)&cinfo, STATUS_MISMATCH);
        }
        define_rows(coef_arrays[ci], coef_arrays[ci]->n_rows); /* rows no scan reached */
        /* The caller keeps the first blocks_h * blocks_w blocks: the unpadded grid, row-major. */
        pack_rows(coef_arrays[ci], coef_arrays[ci]->own_rows);
        /* The table latched when the component's first scan began: the one its blocks were
           quantized with, even if the file redefines that slot later. A component that no
           scan reached (truncated file) falls back to the slot's current table. */
        qtable = comp->quant_table ? comp->quant_table : cinfo.quant_tbl_ptrs[comp->quant_tbl_no];
        for (k = 0; k < DCTSIZE2; k++)
            job->qtables[ci * DCTSIZE2 + k] = qtable ? qtable->quantval[k] : 0;
    }
    job->scans = cinfo.input_scan_number;
    job->restart_interval = cinfo.restart_interval;
    jpeg_destroy_decompress(&cinfo);
}

PyDoc_STRVAR(read_doc,
"read(data, planes, qtables, max_scans, stop_on_warning)\n"
"    -> (status, warnings, message, scans, restart_interval)\n\n"
"Entropy-decode the JPEG in `data` (bytes-like) into `planes` (one C-contiguous int16\n"
"[blocks_h, blocks_w, 8, 8] array per component, sized from the frame header and padded to\n"
"whole MCUs; on return each holds its unpadded grid, row-major, at the start of its memory)\n"
"and `qtables` (uint16 [n_components, 8, 8]), natural order. The GIL is released meanwhile.\n"
"status: 0 ok, 1 libjpeg error, 2 corrupt-data warning (stop_on_warning), 3 too many scans,\n"
"4 libjpeg's frame differs from the planes; warnings: corrupt-data warnings counted;\n"
"message: libjpeg's message for the error or the first warning; scans: scans read;\n"
"restart_interval: the last DRI's (both 0 unless status is 0).");

static PyObject *native_read(PyObject *self, PyObject *args)
{
    Py_buffer data = {0}, qtables = {0};
    PyObject *plane_list, *result = NULL;
    Py_buffer *planes = NULL;
    int max_scans, stop_on_warning, n_acquired = 0, i;
    read_job job;
    (void)self;

    if (!PyArg_ParseTuple(args, "y*O!w*ip", &data, &PyList_Type, &plane_list, &qtables,
                          &max_scans, &stop_on_warning))
        return NULL;
    memset(&job, 0, sizeof job);
    job.n_planes = (int)PyList_GET_SIZE(plane_list);
    if (job.n_planes < 1 || job.n_planes > 4 || qtables.len != (Py_ssize_t)job.n_planes * 64 * 2) {
        PyErr_SetString(PyExc_ValueError, "need 1 to 4 planes and a uint16 [n, 8, 8] qtables array");
        goto done;
    }
    planes = PyMem_Calloc(job.n_planes, sizeof(Py_buffer));
    if (!planes) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < job.n_planes; i++) {
        Py_buffer *p = &planes[i];
        if (PyObject_GetBuffer(PyList_GET_ITEM(plane_list, i), p,
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto done;
        n_acquired++;
        if (p->ndim != 4 || p->itemsize != 2 || p->shape[2] != 8 || p->shape[3] != 8 ||
            strcmp(p->format, "h") != 0) {
            PyErr_SetString(PyExc_ValueError, "planes must be C-contiguous int16 [blocks_h, blocks_w, 8, 8]");
            goto done;
        }
    }
    job.data = data.buf;
    job.size = (size_t)data.len;
    job.planes = planes;
    job.qtables = qtables.buf;
    job.max_scans = max_scans;
    job.err.stop_on_warning = stop_on_warning;

    Py_BEGIN_ALLOW_THREADS
    read_blocks(&job);
    Py_END_ALLOW_THREADS

    result = Py_BuildValue("(ilsiI)", job.err.status, job.err.warnings, job.err.message, job.scans,
                           job.restart_interval);
done:
    for (i = 0; i < n_acquired; i++)
        PyBuffer_Release(&planes[i]);
    PyMem_Free(planes);
    PyBuffer_Release(&data);
    PyBuffer_Release(&qtables);
    return result;
}

static PyMethodDef native_methods[] = {
    {"read", native_read, METH_VARARGS, read_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_jpegnative",
    "Coefficient reader on libjpeg-turbo (see kdecode.jpeg.reader.NativeBackend).", -1, native_methods,
};

#define STR_(x) #x
#define STR(x) STR_(x)

PyMODINIT_FUNC PyInit__jpegnative(void)
{
    PyObject *m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
#ifdef LIBJPEG_TURBO_VERSION
    if (PyModule_AddStringConstant(m, "libjpeg_version", "libjpeg-turbo " STR(LIBJPEG_TURBO_VERSION)) < 0)
        goto error;
#else
    if (PyModule_AddStringConstant(m, "libjpeg_version", "libjpeg " STR(JPEG_LIB_VERSION)) < 0)
        goto error;
#endif
    if (PyModule_AddIntConstant(m, "jpeg_lib_version", JPEG_LIB_VERSION) < 0)
        goto error;
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
