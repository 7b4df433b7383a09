/*
 * paramlib bridge: C ABI over libtorch for Fortran (and C) host models.
 *
 * Rules every entry point follows:
 *  - returns a status (PL_OK = 0, a PL_ERR_* code, or a PL_WARN_* code > 0: the call
 *    did its work, see the function); nothing calls exit/abort, no C++ exception crosses this ABI;
 *  - the message of the last failure on the calling thread is pl_last_error();
 *  - models are integer handles; a freed handle is never reused, so use after
 *    free is reported (PL_ERR_HANDLE) instead of touching freed memory.
 *
 * Host arrays are described Fortran-style: data pointer, element type, rank,
 * extents and strides in elements, first dimension first:
 *   rank 1: (ncol)            a one-level field (surface field)
 *   rank 2: (nlev, ncol)      columns; contiguous => zero-copy wrap
 *   rank 3: (ni, nlev, nj)    a WRF tile slice a(its:ite, kts:kte, jts:jte);
 *                             columns are ordered i fastest, then j.
 * Levels are in the model's level order (surface to top by contract).
 *
 * Threading: a handle keeps the I/O state of a call sequence (inputs set,
 * outputs and bad-column flags of the last forward) per calling thread. Threads
 * sharing one handle each get the outputs of their own inputs: pl_set_input,
 * pl_forward, pl_bad_columns and pl_get_output on one thread never see another
 * thread's calls. A handle's calls are serialised by its lock (one forward at a
 * time), so sharing is correct but slow. The sequence must stay on one thread:
 * inputs set on one thread are not visible to a forward on another
 * (PL_ERR_NOT_READY). A thread's state is freed when the thread ends or the
 * handle is freed. Settings (screening, require_units, precision) are per handle. For
 * OpenMP tiles give each thread its own handle with pl_model_clone: clones share
 * the weights and run in parallel.
 *
 * Trust: a model file is code (TorchScript). Load only files from a trusted
 * source, or pin the file with pl_model_load_pinned.
 */
#ifndef PARAMLIB_BRIDGE_H
#define PARAMLIB_BRIDGE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pl_status {
  PL_OK = 0,
  PL_WARN_BAD_INPUT = 1, /* forward ran; some columns had NaN/Inf inputs */
  PL_WARN_NO_RANGE = 2,  /* the metadata records no valid range for this input */
  PL_WARN_PRECISION = 3, /* forward ran in float32: the reduced precision asked for was refused */
  PL_ERR_FILE = 10,      /* model file missing or unreadable */
  PL_ERR_LOAD = 11,      /* file is not a loadable TorchScript model */
  PL_ERR_METADATA = 12,  /* paramlib.json missing or invalid */
  PL_ERR_NAME = 13,      /* unknown input or output name */
  PL_ERR_LEVELS = 14,    /* level count or level order differs from the metadata */
  PL_ERR_UNITS = 15,     /* units differ from the metadata, or are missing where required */
  PL_ERR_SHAPE = 16,     /* wrong rank, column count or output shape */
  PL_ERR_DEVICE = 17,    /* device not available (e.g. CUDA on a CPU node) */
  PL_ERR_NOT_READY = 18, /* forward before every input is set, or output before forward */
  PL_ERR_HANDLE = 19,    /* invalid or freed model handle */
  PL_ERR_ARGUMENT = 20,  /* bad argument (dtype, statistic, member index, ...) */
  PL_ERR_RUNTIME = 21,   /* libtorch raised an error while running the model */
  PL_ERR_HASH = 22       /* model file's SHA-256 differs from the pinned one */
};

enum pl_dtype { PL_FLOAT32 = 0, PL_FLOAT64 = 1 };
enum pl_device { PL_DEVICE_CPU = 0, PL_DEVICE_CUDA = 1 };
/* Arithmetic of pl_forward (pl_model_set_precision). */
enum pl_precision { PL_PRECISION_FP32 = 0, PL_PRECISION_BF16 = 1, PL_PRECISION_TF32 = 2 };
/* What pl_get_output returns for an ensemble model (deterministic: PL_MEAN). */
enum pl_statistic { PL_MEAN = 0, PL_SPREAD = 1, PL_MEMBER = 2 };

typedef int64_t pl_handle;

const char *pl_last_error(void);
const char *pl_version(void);
int pl_set_num_threads(int n);
int pl_cuda_device_count(void);

/* Unknown level_order in the metadata, or a name/units longer than 255 characters,
 * is PL_ERR_METADATA. */
int pl_model_load(const char *path, int device, int device_index, pl_handle *out);
/* pl_model_load of a pinned file: sha256 is the file's expected SHA-256 as 64 hex
 * characters (any case); NULL or "" = no check. The file is read once and hashed
 * before anything of it is loaded: a mismatch is PL_ERR_HASH (message names the
 * file, expected and actual hash), a malformed sha256 PL_ERR_ARGUMENT. */
int pl_model_load_pinned(const char *path, int device, int device_index, const char *sha256, pl_handle *out);
int pl_model_clone(pl_handle model, pl_handle *out);
int pl_model_free(pl_handle model);
/* Input screening for NaN/Inf (default on). */
int pl_model_set_screening(pl_handle model, int on);
/* Require units (default off; a clone inherits it): when on, pl_model_check_field,
 * pl_set_input and pl_get_output without units (NULL or blank) fail with
 * PL_ERR_UNITS naming the field and the units the metadata expects. */
int pl_model_require_units(pl_handle model, int on);
/* Reduced precision, opt-in (default PL_PRECISION_FP32; a clone starts at fp32):
 * PL_PRECISION_BF16 runs forward under autocast to bfloat16 on the model's device (CPU or
 * CUDA; matmuls in bf16, parameters and reductions kept float32); PL_PRECISION_TF32 lets
 * CUDA matmuls use TF32 during forward (a process-wide cuBLAS switch, on while any TF32
 * forward runs, then restored; a CPU model gets PL_ERR_DEVICE).
 * Accuracy guard: the first forward after this call runs the model in both float32 and the
 * reduced precision and compares each output, ||reduced - fp32||_2 / ||fp32||_2 over all its
 * values (members included); when the largest is at most `tolerance` (> 0) the handle keeps
 * the reduced precision, otherwise it goes back to float32, that forward returns the float32
 * outputs and PL_WARN_PRECISION naming the output and both numbers. pl_model_precision gives
 * the precision in effect and the error measured by that check (-1 before one). */
int pl_model_set_precision(pl_handle model, int precision, double tolerance);
int pl_model_precision(pl_handle model, int *precision, double *rel_error);

/* Metadata queries. kind: 0 = input, 1 = output. field_info copies name and units
 * NUL-terminated (a NULL buffer is skipped); a buffer shorter than the text plus its
 * NUL is PL_ERR_ARGUMENT, never a truncated name (256 bytes always suffice).
 * metadata_json sets *needed to the JSON's size with its NUL and copies it when
 * buflen >= *needed; a shorter buffer gets "" (never a truncated JSON): query
 * *needed with buflen 0 first.
 * valid_range gives the training range of input `name` (metadata "valid_range"), one value
 * per level in the field's level order: *nlev (may be NULL) is set to the input's level count
 * and lo, hi are filled when both are non-NULL (query *nlev with NULL first); buffers of
 * len < *nlev values are PL_ERR_ARGUMENT, never a part of the range. A
 * model that records no range for the input gives PL_WARN_NO_RANGE with lo = -DBL_MAX and
 * hi = DBL_MAX (no bound); a malformed range is PL_ERR_METADATA, an unknown input PL_ERR_NAME. */
int pl_model_num_fields(pl_handle model, int kind, int *n);
int pl_model_field_info(pl_handle model, int kind, int index, char *name, int name_len, char *units, int units_len,
                        int *nlev);
int pl_model_ensemble_size(pl_handle model, int *n);
int pl_model_metadata_json(pl_handle model, char *buf, int buflen, int *needed);
int pl_model_valid_range(pl_handle model, const char *name, double *lo, double *hi, int len, int *nlev);

/* Check a host field against the metadata without data (at host start-up).
 * units may be NULL or "" to skip the units check (unless required, see
 * pl_model_require_units); level_order ("surface_to_top" or "top_to_surface")
 * NULL or "" skips the order check; an order other than the metadata's is
 * PL_ERR_LEVELS. */
int pl_model_check_field(pl_handle model, int kind, const char *name, int nlev, const char *units,
                         const char *level_order);

/* Provide an input for the next forward. A contiguous float32 array on a CPU
 * model is wrapped without a copy and must stay valid until pl_forward returns. */
int pl_set_input(pl_handle model, const char *name, const char *units, const void *data, int dtype, int rank,
                 const int64_t *shape, const int64_t *strides);

/* Run the model on the inputs set since the last forward. n_bad (may be NULL)
 * receives the number of columns with non-finite inputs; those columns are
 * run on zeros and their outputs are set to zero. */
int pl_forward(pl_handle model, int64_t *n_bad);

/* Per-column flags (1 = bad input) of the last forward, int32 array of ncol. */
int pl_bad_columns(pl_handle model, int32_t *flags, int64_t ncol);

/* Copy an output of the last forward into a host array (described as above). */
int pl_get_output(pl_handle model, const char *name, const char *units, void *data, int dtype, int rank,
                  const int64_t *shape, const int64_t *strides, int statistic, int member);

#ifdef __cplusplus
}
#endif
#endif
