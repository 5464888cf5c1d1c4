#include "orchard/cli/jobs.hpp"

#include <arrow/util/config.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/featurize/featurize.hpp"
#include "orchard/model/model.hpp"
#include "orchard/pca/job.hpp"
#include "orchard/report/collect.hpp"
#include "orchard/validate/validate.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::cli {
namespace {
void remove_success(const storage::Location& output) { storage::remove(layout::success(output)); }

nlohmann::json versions() {
  return {{"orchard", kVersion}, {"libtorch", TORCH_VERSION}, {"arrow", ARROW_VERSION_STRING}};
}
}  // namespace

void run_featurize(const FeaturizeArgs& a) {
  const auto input = storage::open(a.input);
  const auto output = storage::open(a.output);
  const std::string model_pt = model::resolve(a.model);
  remove_success(output);
  const auto manifest = dataset::plan(input, output, {storage::redact(input.uri()), a.glob, a.limit, a.shard_size});
  std::fprintf(stderr, "featurize: %zu images in %d shards, model %s\n", manifest.items.size(),
               manifest.num_shards(), model_pt.c_str());
  const auto s = featurize::run(manifest, input, output, model_pt, {a.batch, a.threads, a.io_depth, !a.quiet});
  std::fprintf(stderr,
               "featurize: done: %lld embedded, %lld errors in %.1fs (%.1f images/s); %d of %d shards "
               "were already finished\n",
               static_cast<long long>(s.embedded), static_cast<long long>(s.failed), s.seconds,
               s.images_per_s, s.shards_skipped, s.shards);
  nlohmann::json j = {
      {"images", s.images}, {"embedded_this_run", s.embedded}, {"errors_this_run", s.failed},
      {"shards", s.shards}, {"shards_skipped", s.shards_skipped}, {"seconds", s.seconds},
      {"images_per_s", s.images_per_s}, {"model", model_pt}, {"versions", versions()},
      {"options", {{"input", storage::redact(a.input)}, {"glob", a.glob}, {"batch", a.batch}, {"threads", a.threads},
                   {"io_depth", a.io_depth}, {"limit", a.limit}, {"shard_size", a.shard_size}}}};
  storage::write_text(layout::featurize_json(output), j.dump(2) + "\n");
}

void run_pca(const PcaArgs& a) {
  const auto output = storage::open(a.output);
  remove_success(output);  // the job's outputs change: it is no longer a validated, complete run
  const auto s = pca::run_job(output, {a.variance, a.k, a.center, a.csv, 0});
  std::fprintf(stderr, "pca: %lld rows, k = %d (%.2f%% of the variance), fit %.1fs, transform %.1fs\n",
               static_cast<long long>(s.rows), s.k, 100 * s.cumulative, s.fit_seconds, s.transform_seconds);
  nlohmann::json j = {{"rows", s.rows}, {"k", s.k}, {"cumulative_explained_variance", s.cumulative},
                      {"fit_seconds", s.fit_seconds}, {"transform_seconds", s.transform_seconds},
                      {"options", {{"variance", a.variance}, {"k", a.k}, {"center", a.center}, {"csv", storage::redact(a.csv)}}}};
  storage::write_text(layout::pca_json(output), j.dump(2) + "\n");
}

namespace {
validate::Counts validate_or_throw(const storage::Location& output) {
  const auto r = validate::check(output);
  if (!r.problems.empty()) {
    for (const auto& p : r.problems) std::fprintf(stderr, "validate: %s\n", p.c_str());
 throw Error(output.display() + " is not valid: " + std::to_string(r.problems.size()) +
                " problem(s), the first: " + r.problems.front());
  }
  std::fprintf(stderr, "validate: ok: %lld inputs = %lld embedded + %lld errors; k = %d, %lld PCA rows\n",
               static_cast<long long>(r.counts.inputs), static_cast<long long>(r.counts.embedded),
               static_cast<long long>(r.counts.errors), r.counts.k, static_cast<long long>(r.counts.pca_rows));
  return r.counts;
}
}  // namespace

void run_validate(const std::string& output) { validate_or_throw(storage::open(output)); }

void run_report(const std::string& output) {
  const auto file = report::write(storage::open(output));
  std::fprintf(stderr, "report: %s\n", file.display().c_str());
}

void run_all(const FeaturizeArgs& f, PcaArgs p) {
  using Clock = std::chrono::steady_clock;
  auto secs = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const auto t0 = Clock::now();
  run_featurize(f);
  const double t_featurize = secs(t0);
  auto t = Clock::now();
  p.output = f.output;
  run_pca(p);
  const double t_pca = secs(t);
  t = Clock::now();
  const auto output = storage::open(f.output);
  const auto counts = validate_or_throw(output);
  const double t_validate = secs(t);
  t = Clock::now();
  run_report(f.output);
  const double t_report = secs(t);
  const std::time_t now = std::time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json j = {
      {"finished_at", when},
      {"counts", {{"inputs", counts.inputs}, {"embedded", counts.embedded}, {"errors", counts.errors}, {"k", counts.k}}},
      {"timings_s", {{"featurize", t_featurize}, {"pca", t_pca}, {"validate", t_validate}, {"report", t_report}, {"total", secs(t0)}}},
      {"versions", versions()},
      {"options", {{"input", storage::redact(f.input)}, {"glob", f.glob}, {"batch", f.batch}, {"threads", f.threads},
                   {"limit", f.limit}, {"shard_size", f.shard_size}, {"model", storage::redact(f.model)},
                   {"variance", p.variance}, {"k", p.k}, {"center", p.center}}}};
  storage::write_text(layout::success(output), j.dump(2) + "\n");
  std::fprintf(stderr, "run: done in %.1fs: %s\n", secs(t0), output.display().c_str());
}

void run_prepare_model(const std::string& weights, const std::string& out) {
  const std::string path = model::prepare(weights, out);
  if (out.empty()) {
    const std::string def = model::cache_dir() + "/default.pt";
    std::error_code ec;
    std::filesystem::copy_file(path, def + ".tmp", std::filesystem::copy_options::overwrite_existing, ec);
    if (!ec) std::filesystem::rename(def + ".tmp", def, ec);
    if (ec) throw Error(def + ": cannot write the default model (" + ec.message() + "); set ORCHARD_CACHE to a writable folder");
  }
  std::printf("%s\n", path.c_str());
}

}  // namespace orchard::cli
