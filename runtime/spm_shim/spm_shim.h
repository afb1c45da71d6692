/* lcd_spm_shim: a plain-C facade over libsentencepiece, built as its own
 * shared library (liblcd_spm_shim.so) that links only libsentencepiece and
 * the C++ runtime.
 *
 * Why it exists: Debian 12's libsentencepiece.so.0 bundles and exports its
 * own copy of protobuf 3.14, so a process that also links libprotobuf 3.21
 * (every gRPC binary) cannot link libsentencepiece directly. lcd_runtime
 * instead dlopen()s this shim with RTLD_LOCAL | RTLD_DEEPBIND (see
 * runtime/src/tokenizer/sentencepiece_library.cc), which keeps sentencepiece's symbol
 * lookups inside its own dependency tree. Only C types cross the boundary,
 * and every buffer the shim returns is freed by the shim, so the two sides
 * never share C++ objects or allocators.
 *
 * Contract: all functions are safe to call concurrently on the same handle
 * except lcd_spm_free (the handle is immutable after lcd_spm_load). None of
 * them throws; allocation failure is reported as an error or a NULL result.
 * Out-of-range ids are accepted and give the library's answer (an empty
 * piece, false predicates) rather than undefined behaviour.
 */
#ifndef LCD_RUNTIME_SPM_SHIM_SPM_SHIM_H_
#define LCD_RUNTIME_SPM_SHIM_SPM_SHIM_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; the loader refuses a shim whose
 * lcd_spm_abi_version() differs from the one it was compiled against. */
#define LCD_SPM_SHIM_ABI_VERSION 1

typedef struct LcdSpm LcdSpm;

int lcd_spm_abi_version(void);

/* Loads a tokenizer.model. On success returns a handle (free with
 * lcd_spm_free). On failure returns NULL, sets *error to a NUL-terminated
 * message (free with lcd_spm_free_buffer; may be NULL if even that could not
 * be allocated) and *not_found to 1 when the file is missing, else 0. */
LcdSpm* lcd_spm_load(const char* path, char** error, int* not_found);
void lcd_spm_free(LcdSpm* spm);

/* Encodes text[0, len) into piece ids. On success returns 1 and sets *ids to
 * a buffer of *num_ids ints (free with lcd_spm_free_buffer; NULL when
 * *num_ids is 0). On failure returns 0 and sets *error as lcd_spm_load does. */
int lcd_spm_encode(const LcdSpm* spm, const char* text, size_t len, int** ids, size_t* num_ids,
                   char** error);

/* Decodes ids into text. Returns a NUL-terminated buffer of *len bytes (free
 * with lcd_spm_free_buffer), or NULL on allocation failure. */
char* lcd_spm_decode_ids(const LcdSpm* spm, const int* ids, size_t num_ids, size_t* len);

/* The piece spelled by id, like lcd_spm_decode_ids' result. */
char* lcd_spm_id_to_piece(const LcdSpm* spm, int id, size_t* len);
int lcd_spm_piece_to_id(const LcdSpm* spm, const char* piece, size_t len);
int lcd_spm_piece_size(const LcdSpm* spm);
int lcd_spm_bos_id(const LcdSpm* spm);
int lcd_spm_eos_id(const LcdSpm* spm);
int lcd_spm_unk_id(const LcdSpm* spm);
int lcd_spm_pad_id(const LcdSpm* spm);
int lcd_spm_is_control(const LcdSpm* spm, int id);
int lcd_spm_is_byte(const LcdSpm* spm, int id);
int lcd_spm_is_unknown(const LcdSpm* spm, int id);

/* Frees a buffer returned by any function above; NULL is ignored. */
void lcd_spm_free_buffer(void* buffer);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* LCD_RUNTIME_SPM_SHIM_SPM_SHIM_H_ */
