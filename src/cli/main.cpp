// polysketch: one program, one subcommand per job. Thin: parse flags, call the library.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <exception>

#include "cli/commands.h"
#include "polysketch/attention.h"

int main(int argc, char** argv) {
  CLI::App app{"polysketch: PolySketchFormer, linear-time polynomial attention, in C++"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "polysketch 0.1.0");
  polysketch::cli::add_prepare(app);
  polysketch::cli::add_train(app);
  polysketch::cli::add_generate(app);
  polysketch::cli::add_bench_attention(app);
  polysketch::cli::add_bench_train(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const polysketch::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
