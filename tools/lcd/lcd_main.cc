// `lcd`: the command-line front end. Dispatches `lcd <command> [flags]` to
// the subcommands registered in tools/lcd/*.cc.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lcd/subcommand.h"

namespace lcd::tools {
namespace {

std::vector<Subcommand>& Registry() {
  static auto* registry = new std::vector<Subcommand>();
  return *registry;
}

void PrintUsage(FILE* out) {
  std::fprintf(out, "usage: lcd <command> [flags]   (lcd <command> --help for its flags)\n\ncommands:\n");
  for (const Subcommand& c : Subcommands()) std::fprintf(out, "  %-16s %s\n", c.name, c.summary);
}

}  // namespace

bool RegisterSubcommand(const Subcommand& subcommand) {
  Registry().push_back(subcommand);
  return true;
}

std::vector<Subcommand> Subcommands() {
  std::vector<Subcommand> out = Registry();
  std::sort(out.begin(), out.end(), [](const Subcommand& a, const Subcommand& b) {
    return std::strcmp(a.name, b.name) < 0;
  });
  return out;
}

int ReportError(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "lcd %s: %s\n", command, status.ToString().c_str());
  return 1;
}

std::optional<int> ParseFlags(const char* command, cxxopts::Options& options, int argc, char** argv,
                              std::initializer_list<const char*> required, cxxopts::ParseResult* flags) {
  try {
    *flags = options.parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lcd %s: %s\n", command, e.what());
    return 2;
  }
  if (flags->count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  if (!flags->unmatched().empty()) {
    // E.g. "--smooth off": an option with an implicit value takes "=off".
    std::fprintf(stderr, "lcd %s: unexpected argument '%s' (a flag's value is --flag VALUE, or --flag=VALUE for one "
                 "whose value is optional)\n", command, flags->unmatched()[0].c_str());
    return 2;
  }
  for (const char* name : required) {
    if (!flags->count(name)) {
      std::fprintf(stderr, "lcd %s: --%s is required\n%s\n", command, name, options.help().c_str());
      return 2;
    }
  }
  return std::nullopt;
}

}  // namespace lcd::tools

int main(int argc, char** argv) {
  using lcd::tools::Subcommands;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    lcd::tools::PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const lcd::tools::Subcommand& c : Subcommands()) {
    if (std::strcmp(argv[1], c.name) == 0) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "lcd: unknown command '%s'\n", argv[1]);
  lcd::tools::PrintUsage(stderr);
  return 2;
}
