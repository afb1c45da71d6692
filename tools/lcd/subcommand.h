// Subcommands of the `lcd` tool. Each lives in its own file and registers
// itself at static-initialisation time with LCD_REGISTER_SUBCOMMAND, so adding
// one means adding a file, not editing lcd_main.cc.
#ifndef LCD_TOOLS_LCD_SUBCOMMAND_H_
#define LCD_TOOLS_LCD_SUBCOMMAND_H_

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cxxopts.hpp"

namespace lcd::tools {

// Runs a subcommand. argv[0] is the subcommand name; the rest are its flags.
// Returns the process exit code.
using SubcommandFn = int (*)(int argc, char** argv);

struct Subcommand {
  const char* name;
  const char* summary;  // One line for `lcd --help`.
  SubcommandFn run;
};

bool RegisterSubcommand(const Subcommand& subcommand);
// Registered subcommands, sorted by name.
std::vector<Subcommand> Subcommands();

// Prints "lcd <command>: <status>" to stderr and returns the exit code 1.
int ReportError(const char* command, const absl::Status& status);

// Parses a subcommand's flags into *flags. Returns the exit code to leave
// with: 0 after printing --help on stdout; 2 after naming on stderr a parse
// error (unknown flag, malformed value), a stray argument or a missing
// flag of `required`. nullopt: go on and read *flags (a flag with a default
// or a counted one reads without throwing).
std::optional<int> ParseFlags(const char* command, cxxopts::Options& options, int argc, char** argv,
                              std::initializer_list<const char*> required, cxxopts::ParseResult* flags);

}  // namespace lcd::tools

#define LCD_REGISTER_SUBCOMMAND(ident, name, summary, fn) \
  [[maybe_unused]] static const bool lcd_subcommand_registered_##ident = \
      ::lcd::tools::RegisterSubcommand({name, summary, fn})

#endif  // LCD_TOOLS_LCD_SUBCOMMAND_H_
