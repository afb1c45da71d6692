// The quantization methods `lcd quantize --method` accepts: one list, read by
// the CLI's help, by lcd-jobs' validation of SubmitJob (header-only, so
// lcd-jobs does not link the quantizer) and by QuantizeModel.
#ifndef LCD_QUANTIZER_METHODS_H_
#define LCD_QUANTIZER_METHODS_H_

#include <array>
#include <string>
#include <string_view>

namespace lcd::quantizer {

struct MethodInfo {
  std::string_view name;
  std::string_view summary;  // One line: what it is and when to use it.
  bool distills = false;       // Trains through the distillation driver (kd_* options, --resume).
  bool needs_calibration_file = false;  // Refused without --calib (no teacher-generated fallback).
};

inline constexpr std::array kMethods = {
    MethodInfo{"rtn", "round-to-nearest affine per group; no data, seconds; the floor every method must beat"},
    MethodInfo{"kmeans", "importance-weighted k-means codebook per (row, group); no training, optional calibration"},
    MethodInfo{"lcd", "k-means init + knowledge distillation of centroids and latent weights; best at 2-3 bits",
               /*distills=*/true},
    MethodInfo{"r2q", "2-bit only: two residual 1-bit planes per group (binary-coded, LUT kernels); --steps 0 = closed form",
               /*distills=*/true},
    MethodInfo{"bitdistiller",
               "clipping search + self-distillation QAT (INT2 affine / NF3 codebook); the QAT peer to compare with",
               /*distills=*/true},
    MethodInfo{"gptq", "Hessian-based rounding with error feedback (affine, needs --calib); minutes, the standard PTQ baseline",
               /*distills=*/false, /*needs_calibration_file=*/true},
    MethodInfo{"glvq", "grouped lattice VQ (learned generator + mu-law per column group, salience bit allocation); needs --calib",
               /*distills=*/false, /*needs_calibration_file=*/true},
};

// The method of that name, or nullptr.
inline const MethodInfo* FindMethod(std::string_view name) {
  for (const MethodInfo& m : kMethods) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

inline bool IsKnownMethod(std::string_view name) { return FindMethod(name) != nullptr; }

// "rtn | kmeans | lcd" (for help texts and errors).
inline std::string MethodNames(std::string_view separator = " | ") {
  std::string out;
  for (const MethodInfo& m : kMethods) {
    if (!out.empty()) out += separator;
    out += m.name;
  }
  return out;
}

}  // namespace lcd::quantizer

#endif  // LCD_QUANTIZER_METHODS_H_
