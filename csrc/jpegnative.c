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
 *   are tables and decoder state), and the pixel stage's component planes, sized from the same
 *   checked grids; the progress monitor stops a file with more than max_scans scans (a
 *   progressive file with thousands of scans would re-walk the image for each).
 *
 * read(..., pixels) also decodes the image exactly (the pixel stage of csrc/exact_cpu.c, compiled
 * in): for a file of one scan on a second thread that follows the entropy decoder block row by
 * block row, so the two halves of the work overlap; for a progressive file the same during its
 * last scan (progressive_feed); otherwise after the read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* The exact pixel stage (IDCT, upsampling, colour) without its Python module: one
   implementation, which kdecode._exactcpu also builds on its own. */
#define KDECODE_PIXEL_STAGE_ONLY
#include "exact_cpu.c"

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
    int index;                   /* the component's */
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
    int progressive;
    int seen_scan;            /* the scan the last block access was for */
    jvirt_barray_ptr arrays[4]; /* the block array of each component, as libjpeg asked for them */
    int scans;                /* scans libjpeg read (the marker parser stops at the first) */
    unsigned int restart_interval; /* the last DRI's */
    struct pixel_job *pixels; /* NULL: coefficients only */
    reader_error err;
} read_job;

/* read(..., pixels): the image decoded from the caller's planes into `out`. */
typedef struct pixel_job {
    uint8_t *out;
    Py_ssize_t height, width;
    int n, convert, pb, bands, stream;
    Comp comps[4];          /* the pixel thread's */
    Comp idle[4];           /* their copy before it started (feed_help's template: the thread
                               changes its own as it goes) */
    int32_t qtables[4][64]; /* the Idct of each component points here */
    int started;            /* tables set up (and, streaming, the thread running) */
    int streaming;          /* stream asked for, and a single scan or a progressive file (whose
                               thread starts at its last scan, if it has one); cleared if no
                               thread starts, and when the streamed decode is over */
    int redo;               /* a scan came after the last one: decode again from the final blocks */
    int out_of_memory;
    RowFeed feed;
#ifdef HAVE_THREADS
    pthread_t thread;
#endif
} pixel_job;

#ifdef HAVE_THREADS
static void *pixel_thread(void *arg)
{
    pixel_job *p = (pixel_job *)arg;
    upsample_color_rows(p->comps, p->n, p->out, 0, p->height, p->width, p->convert, p->pb);
    return NULL;
}
#endif

/* job->qtables: the table latched when each component's first scan began, the one its blocks
   were quantized with, even if the file redefines that slot later. A component that no scan
   reached (truncated file) falls back to the slot's current table. */
static void latch_qtables(read_job *job, j_decompress_ptr cinfo)
{
    int ci, k;
    for (ci = 0; ci < cinfo->num_components && ci < job->n_planes; ci++) {
        jpeg_component_info *comp = &cinfo->comp_info[ci];
        JQUANT_TBL *qtable = comp->quant_table ? comp->quant_table : cinfo->quant_tbl_ptrs[comp->quant_tbl_no];
        for (k = 0; k < DCTSIZE2; k++)
            job->qtables[ci * DCTSIZE2 + k] = qtable ? qtable->quantval[k] : 0;
    }
}

/* Set the pixel stage up once the tables are known: when a single scan starts (then its thread
   starts too), or after the read. */
static void pixels_start(read_job *job, j_decompress_ptr cinfo)
{
    pixel_job *p = job->pixels;
    int k, i;
    latch_qtables(job, cinfo);
    for (k = 0; k < p->n; k++) {
        for (i = 0; i < DCTSIZE2; i++)
            p->qtables[k][i] = job->qtables[k * DCTSIZE2 + i];
        p->comps[k].blocks = (const int16_t *)job->planes[k].buf;
        idct_init(&p->comps[k].idct, p->qtables[k]);
    }
    p->started = 1;
#ifdef HAVE_THREADS
    if (p->streaming) {
        for (k = 0; k < p->n; k++) {
            p->comps[k].feed = &p->feed;
            p->comps[k].index = k;
        }
        /* A progressive file's blocks are still in libjpeg's MCU-padded rows: they are packed
           only after the read, once this thread is done with them. */
        for (k = 0; k < p->n && job->progressive; k++)
            p->comps[k].row_blocks = job->planes[k].shape[1];
        memcpy(p->idle, p->comps, sizeof p->idle);
        if (pthread_create(&p->thread, NULL, pixel_thread, p) != 0) {
            p->streaming = 0; /* no thread to be had: the stage runs after the read */
            for (k = 0; k < p->n; k++)
                p->comps[k].feed = NULL, p->comps[k].row_blocks = 0;
        }
    }
#endif
}

/* After the read (ok) or a failure: finish the pixel stage, or stop its thread. */
static void pixels_finish(read_job *job, j_decompress_ptr cinfo, int ok)
{
    pixel_job *p = job->pixels;
    int k;
    if (!p)
        return;
#ifdef HAVE_THREADS
    if (p->started && p->streaming) {
        if (ok) {
            for (k = 0; k < p->n; k++)
                feed_publish(&p->feed, k, p->comps[k].bh);
            /* This thread is free now: it decodes part of the rows the pixel thread has not
               reached (out of memory: it leaves them all to that thread). */
            feed_help(&p->feed, p->idle, p->n, p->out, p->height, p->width, p->convert, p->pb);
        } else {
            feed_publish(&p->feed, -1, 0);
        }
        pthread_join(p->thread, NULL);
        p->streaming = 0;
        return;
    }
#endif
    if (!ok)
        return;
    if (!p->started) { /* not streamed: all the blocks are here now */
        p->streaming = 0;
        pixels_start(job, cinfo);
    } else if (p->redo) { /* streamed on blocks that a later scan changed: again, from the final ones */
        memcpy(p->comps, p->idle, sizeof p->comps);
        for (k = 0; k < p->n; k++)
            p->comps[k].feed = NULL, p->comps[k].row_blocks = 0;
    }
    if (upsample_color_image(p->comps, p->n, p->out, p->height, p->width, p->convert, p->pb, p->bands) < 0)
        p->out_of_memory = 1;
}

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
    array->index = job->n_requested - 1;
    job->arrays[array->index] = array;
    for (row = 0; row < n_rows; row++)
        array->rows[row] = (JBLOCKROW)plane->buf + (size_t)row * blocks_per_row;
    return array;
}

static void realize_nothing(j_common_ptr cinfo)
{
    (void)cinfo; /* our arrays exist already; libjpeg asks for no sample arrays here */
}

#ifdef HAVE_THREADS
/* A progressive file's pixels follow its last scan, which takes a third or more of the entropy
 * decoding. A scan is the last one when, as it begins, every coefficient of every component has
 * its final bits (libjpeg's coef_bits all 0, set for a scan before its first block): then the
 * components outside it are final, and those in it are final row by row as it passes them.
 * libjpeg accepts another scan even then (a first pass again, Ah = 0): the streamed decode is
 * finished on the blocks as they are before it, and made again after the read. */
static void progressive_feed(read_job *job, j_decompress_ptr cinfo, jvirt_barray_ptr array, JDIMENSION start_row)
{
    pixel_job *p = job->pixels;
    int ci, k, in_scan;
    if (cinfo->input_scan_number != job->seen_scan) {
        job->seen_scan = cinfo->input_scan_number;
        if (p->started) {
            pixels_finish(job, cinfo, 1);
            p->redo = 1;
            return;
        }
        for (ci = 0; ci < cinfo->num_components; ci++)
            for (k = 0; k < DCTSIZE2; k++)
                if (cinfo->coef_bits[ci][k] != 0)
                    return;
        if (job->n_requested != job->n_planes)
            return;
        pixels_start(job, cinfo);
        if (!p->streaming)
            return;
        for (ci = 0; ci < cinfo->num_components; ci++) {
            for (k = 0, in_scan = 0; k < cinfo->comps_in_scan; k++)
                in_scan |= cinfo->cur_comp_info[k]->component_index == ci;
            if (!in_scan) {
                define_rows(job->arrays[ci], job->arrays[ci]->n_rows);
                feed_publish(&p->feed, ci, job->arrays[ci]->own_rows);
            }
        }
    }
    if (p->started && p->streaming)
        feed_publish(&p->feed, array->index, start_row < array->own_rows ? start_row : array->own_rows);
}
#endif

static JBLOCKARRAY access_caller_barray(j_common_ptr cinfo, jvirt_barray_ptr array, JDIMENSION start_row,
                                        JDIMENSION n_rows, boolean writable)
{
    (void)writable;
    if (start_row > array->n_rows || n_rows > array->n_rows - start_row)
        ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);
    /* A single scan decodes the rows in order, once: pack the finished ones while they are
       still in cache (a progressive file revisits every row; it is packed at the end), and hand
       them to the pixel thread. */
    read_job *job = (read_job *)cinfo->client_data;
    if (job->single_scan) {
        if (start_row < array->packed_rows) /* never: a single scan goes forward */
            ERREXIT(cinfo, JERR_BAD_VIRTUAL_ACCESS);
        pack_rows(array, start_row);
        if (job->pixels && !job->pixels->started) /* the scan has begun: its tables are latched */
            pixels_start(job, (j_decompress_ptr)cinfo);
#ifdef HAVE_THREADS
        if (job->pixels && job->pixels->streaming)
            feed_publish(&job->pixels->feed, array->index, array->packed_rows);
#endif
    }
#ifdef HAVE_THREADS
    else if (job->progressive && job->pixels && job->pixels->streaming)
        progressive_feed(job, (j_decompress_ptr)cinfo, array, start_row);
#endif
    define_rows(array, start_row + n_rows);
    return array->rows + start_row;
}

/* Everything that calls into libjpeg; runs without the GIL. */
static void read_blocks(read_job *job)
{
    struct jpeg_decompress_struct cinfo;
    reader_progress progress;
    jvirt_barray_ptr *coef_arrays;
    int ci, early;

    cinfo.err = jpeg_std_error(&job->err.pub);
    job->err.pub.error_exit = on_error_exit;
    job->err.pub.emit_message = on_emit_message;
    job->err.pub.output_message = on_output_message;
    if (setjmp(job->err.jump)) {
        pixels_finish(job, &cinfo, 0);
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
    job->progressive = cinfo.progressive_mode;
    if (job->pixels)
        job->pixels->streaming = (job->single_scan || job->progressive) && job->pixels->stream;
    coef_arrays = jpeg_read_coefficients(&cinfo);
    if (job->n_requested != job->n_planes) {
        snprintf(job->err.message, sizeof job->err.message, "libjpeg decoded %d of %d components",
                 job->n_requested, job->n_planes);
        fail((j_common_ptr)&cinfo, STATUS_MISMATCH);
    }

    for (ci = 0; ci < cinfo.num_components; ci++) {
        Py_buffer *plane = &job->planes[ci];

        if ((void *)coef_arrays[ci]->rows[0] != plane->buf) {
            snprintf(job->err.message, sizeof job->err.message, "libjpeg returned component %d out of order", ci);
            fail((j_common_ptr)&cinfo, STATUS_MISMATCH);
        }
        define_rows(coef_arrays[ci], coef_arrays[ci]->n_rows); /* rows no scan reached */
    }
    /* A progressive file's pixel thread reads the padded rows: it ends before they move. */
    early = job->progressive && job->pixels && job->pixels->started && job->pixels->streaming;
    if (early)
        pixels_finish(job, &cinfo, 1);
    for (ci = 0; ci < cinfo.num_components; ci++) /* the caller keeps the first blocks_h * blocks_w
                                                     blocks: the unpadded grid, row-major */
        pack_rows(coef_arrays[ci], coef_arrays[ci]->own_rows);
    latch_qtables(job, &cinfo);
    if (!early)
        pixels_finish(job, &cinfo, 1);
    job->scans = cinfo.input_scan_number;
    job->restart_interval = cinfo.restart_interval;
    jpeg_destroy_decompress(&cinfo);
}

PyDoc_STRVAR(read_doc,
"read(data, planes, qtables, max_scans, stop_on_warning[, pixels])\n"
"    -> (status, warnings, message, scans, restart_interval)\n\n"
"Entropy-decode the JPEG in `data` (bytes-like) into `planes` (one C-contiguous int16\n"
"[blocks_h, blocks_w, 8, 8] array per component, sized from the frame header and padded to\n"
"whole MCUs; on return each holds its unpadded grid, row-major, at the start of its memory)\n"
"and `qtables` (uint16 [n_components, 8, 8]), natural order. The GIL is released meanwhile.\n"
"status: 0 ok, 1 libjpeg error, 2 corrupt-data warning (stop_on_warning), 3 too many scans,\n"
"4 libjpeg's frame differs from the planes; warnings: corrupt-data warnings counted;\n"
"message: libjpeg's message for the error or the first warning; scans: scans read;\n"
"restart_interval: the last DRI's (both 0 unless status is 0).\n"
"pixels: None, or (out, height, width, convert, pixel_bytes, bands, stream, [(bh, bw, ch, cw, hf,\n"
"vf, mode) per component]) to decode the image exactly into `out` (uint8 [height, width,\n"
"pixel_bytes]; the arguments of kdecode._exactcpu.decode, the blocks and tables being the ones\n"
"read). stream: a single-scan file is decoded on a second thread as its blocks arrive; other\n"
"files (and all without stream) after the read, in `bands` bands. `out` is complete when status\n"
"is 0.");

/* Parse read()'s `pixels` into `p` (with the GIL): geometry checked against the planes, buffers
   allocated. 0, or -1 with an exception set; release_pixels() frees what was made either way. */
static int setup_pixels(pixel_job *p, PyObject *args, Py_buffer *planes, int n_planes, Py_buffer *out)
{
    PyObject *out_obj, *comp_list;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "OnnpiipO!", &out_obj, &p->height, &p->width, &p->convert, &p->pb, &p->bands,
                          &p->stream, &PyList_Type, &comp_list))
        return -1;
    p->n = (int)PyList_GET_SIZE(comp_list);
    if (p->n != n_planes) {
        PyErr_Format(PyExc_ValueError, "pixels: %d components for %d planes", p->n, n_planes);
        return -1;
    }
    if (check_layout(p->n, p->pb, p->convert) < 0)
        return -1;
    for (k = 0; k < p->n; k++) {
        Comp *c = &p->comps[k];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(comp_list, k), "nnnnnni", &c->bh, &c->bw, &c->ch, &c->cw, &c->hf,
                              &c->vf, &c->mode))
            return -1;
        c->stride = c->bw * 8;
        if (c->bh < 1 || c->bw < 1 || c->bh * c->bw * 64 * 2 > planes[k].len) {
            PyErr_SetString(PyExc_ValueError, "pixels: block grid larger than its plane");
            return -1;
        }
        if (comp_setup(c, p->height, p->width, 1) < 0)
            return -1;
    }
    if (PyObject_GetBuffer(out_obj, out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (p->height < 1 || p->width < 1 || out->len < p->height * p->width * p->pb) {
        PyErr_SetString(PyExc_ValueError, "pixels: output buffer too small");
        return -1;
    }
    p->out = (uint8_t *)out->buf;
    feed_init(&p->feed);
    return 0;
}

static void release_pixels(pixel_job *p, Py_buffer *out)
{
    int k;
    for (k = 0; k < 4; k++)
        comp_free(&p->comps[k], 1);
    if (p->out)
        feed_destroy(&p->feed);
    if (out->obj)
        PyBuffer_Release(out);
}

static PyObject *native_read(PyObject *self, PyObject *args)
{
    Py_buffer data = {0}, qtables = {0};
    PyObject *plane_list, *result = NULL;
    Py_buffer *planes = NULL;
    int max_scans, stop_on_warning, n_acquired = 0, i;
    read_job job;
    (void)self;

    PyObject *pixel_args = Py_None;
    pixel_job pixels;
    Py_buffer out = {0};

    if (!PyArg_ParseTuple(args, "y*O!w*ip|O", &data, &PyList_Type, &plane_list, &qtables,
                          &max_scans, &stop_on_warning, &pixel_args))
        return NULL;
    memset(&job, 0, sizeof job);
    memset(&pixels, 0, sizeof pixels);
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
    if (pixel_args != Py_None && setup_pixels(&pixels, pixel_args, planes, job.n_planes, &out) < 0)
        goto done;
    if (pixel_args != Py_None)
        job.pixels = &pixels;
    job.data = data.buf;
    job.size = (size_t)data.len;
    job.planes = planes;
    job.qtables = qtables.buf;
    job.max_scans = max_scans;
    job.err.stop_on_warning = stop_on_warning;

    Py_BEGIN_ALLOW_THREADS
    read_blocks(&job);
    Py_END_ALLOW_THREADS

    if (pixels.out_of_memory)
        PyErr_NoMemory();
    else
        result = Py_BuildValue("(ilsiI)", job.err.status, job.err.warnings, job.err.message, job.scans,
                               job.restart_interval);
done:
    release_pixels(&pixels, &out);
    for (i = 0; i < n_acquired; i++)
        PyBuffer_Release(&planes[i]);
    PyMem_Free(planes);
    PyBuffer_Release(&data);
    PyBuffer_Release(&qtables);
    return result;
}

static PyMethodDef native_methods[] = {
    {"read", native_read, METH_VARARGS, read_doc},
    {"set_simd", py_set_simd, METH_O, SET_SIMD_DOC " (for read(..., pixels))"},
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
    PyObject *m;
    pixel_stage_init();
    m = PyModule_Create(&native_module);
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
