// Status propagation macros. Debian's Abseil (20220623) does not ship
// ASSIGN_OR_RETURN / RETURN_IF_ERROR, so lcdserve defines its own.
//
//   LCD_RETURN_IF_ERROR(DoThing());
//   LCD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
//
// Both evaluate their argument exactly once. They are usable in any function
// returning absl::Status or absl::StatusOr<T>.
#ifndef LCD_BASE_STATUS_MACROS_H_
#define LCD_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LCD_STATUS_CONCAT_INNER_(a, b) a##b
#define LCD_STATUS_CONCAT_(a, b) LCD_STATUS_CONCAT_INNER_(a, b)

#define LCD_RETURN_IF_ERROR(expr)                          \
  do {                                                     \
    ::absl::Status lcd_status_ = (expr);                   \
    if (!lcd_status_.ok()) return lcd_status_;             \
  } while (0)

#define LCD_ASSIGN_OR_RETURN(lhs, expr) \
  LCD_ASSIGN_OR_RETURN_IMPL_(LCD_STATUS_CONCAT_(lcd_statusor_, __LINE__), lhs, expr)

#define LCD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // LCD_BASE_STATUS_MACROS_H_
