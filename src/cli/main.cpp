// polysketch: one program, one subcommand per job. Thin: parse flags, call the library.
// Every error is one `error: ...` line on stderr and exit status 1 (README, "Errors").
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "polysketch/error.h"
#include "train/distributed.h"
#include "train/stop_signals.h"

namespace {
int fail(const std::string& message) {
  const int rank = polysketch::train::World::rank(), ranks = polysketch::train::World::size();
  if (ranks > 1) {
    // One rank's error ends the whole job (the others may be waiting in a collective).
    fmt::print(stderr, "error: rank {} of {}: {}\n", rank, ranks, message);
    std::fflush(stderr);
    polysketch::train::World::abort(1);
  }
  fmt::print(stderr, "error: {}\n", message);
  return 1;
}

std::string command_of(const CLI::App& app) {
  for (const auto* sub : app.get_subcommands()) return "polysketch " + sub->get_name();
  return "polysketch";
}

int run(int argc, char** argv) {
  CLI::App app{"polysketch: PolySketchFormer, linear-time polynomial attention, in C++"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "polysketch 0.1.0");
  polysketch::cli::add_prepare(app);
  polysketch::cli::add_train(app);
  polysketch::cli::add_eval(app);
  polysketch::cli::add_generate(app);
  polysketch::cli::add_serve(app);
  polysketch::cli::add_bench_attention(app);
  polysketch::cli::add_bench_train(app);
  polysketch::cli::add_bench_decode(app);
  polysketch::cli::add_bench_gemm(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help, --version
    std::string msg = e.what();
    if (dynamic_cast<const CLI::ExcludesError*>(&e))
      msg += " (with --resume the checkpoint's model and training options are used; with "
             "--config the file's model)";
    return fail(fmt::format("{} (see `{} --help`)", msg, command_of(app)));
  } catch (const polysketch::Error& e) {
    return fail(e.what());
  } catch (const std::bad_alloc&) {
    return fail(fmt::format("out of memory in `{}` (a smaller model, --batch or --context needs less)",
                            command_of(app)));
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  polysketch::train::watch_stop_signals();  // first: every later thread inherits the blocked mask
  polysketch::train::World::init(&argc, &argv);  // data parallelism when started by mpirun
  const int status = run(argc, argv);
  polysketch::train::World::finalize();
  return status;
}
