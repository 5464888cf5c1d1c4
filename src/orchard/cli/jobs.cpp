#include "orchard/cli/jobs.hpp"

#include <arrow/util/config.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "orchard/classify/head.hpp"
#include "orchard/classify/train.hpp"
#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/featurize/featurize.hpp"
#include "orchard/model/model.hpp"
#include "orchard/pca/job.hpp"
#include "orchard/report/collect.hpp"
#include "orchard/table/tables.hpp"
#include "orchard/validate/validate.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::cli {
namespace {
void remove_success(const storage::Location& output) { storage::remove(layout::success(output)); }

nlohmann::json versions() {
  return {{"orchard", kVersion}, {model::engine_name(), model::engine_version()}, {"arrow", ARROW_VERSION_STRING}};
}
}  // namespace

void run_featurize(const FeaturizeArgs& a) {
  const auto input = storage::open(a.input);
  const auto output = storage::open(a.output);
  const std::string model_file = model::resolve(a.model);
  const auto manifest = dataset::plan(
      input, output, {storage::redact(input.uri()), a.glob, a.limit, a.shard_size, model::model_fingerprint(model_file)});
  std::fprintf(stderr, "featurize: %zu images in %d shards, model %s\n", manifest.items.size(),
               manifest.num_shards(), model_file.c_str());
  featurize::Options o{a.batch, a.threads, a.io_depth, !a.quiet};
  // Only when a shard is about to be written: a rerun refused, failing, or with nothing to do
  // leaves a finished OUTPUT finished.
  o.before_writing = [&] { remove_success(output); };
  const auto s = featurize::run(manifest, input, output, model_file, o);
  std::fprintf(stderr,
               "featurize: done: %lld embedded, %lld errors in %.1fs (%.1f images/s); %d of %d shards "
               "were already finished\n",
               static_cast<long long>(s.embedded), static_cast<long long>(s.failed), s.seconds,
               s.images_per_s, s.shards_skipped, s.shards);
  nlohmann::json j = {
      {"images", s.images}, {"embedded_this_run", s.embedded}, {"errors_this_run", s.failed},
      {"shards", s.shards}, {"shards_skipped", s.shards_skipped}, {"seconds", s.seconds},
      {"images_per_s", s.images_per_s}, {"model", model_file}, {"versions", versions()},
      {"options", {{"input", storage::redact(a.input)}, {"glob", a.glob}, {"batch", a.batch}, {"threads", a.threads},
                   {"io_depth", a.io_depth}, {"limit", a.limit}, {"shard_size", a.shard_size}}}};
  // The record of the run that made the shards stays when this one had nothing to do.
  if (s.shards_skipped < s.shards || !storage::exists(layout::featurize_json(output)))
    storage::write_text(layout::featurize_json(output), j.dump(2) + "\n");
}

namespace {
// A classify OUTPUT belongs to one classifier and one --top: _classify.json, written before the
// first shard, names them; resuming with others is refused (predictions would mix).
void claim_for_classifier(const storage::Location& output, const classify::Head& head, const std::string& trained,
                          int top) {
  const auto record = layout::classify_json(output);
  if (storage::exists(record)) {
    const auto j = nlohmann::json::parse(storage::read_file(record)->ToString(), nullptr, false);
    const std::string had = j.is_object() ? j.value("classifier", "") : "";
    const int had_top = j.is_object() ? j.value("top", -1) : -1;
    if (had != head.fingerprint())
      throw Error(output.display() + " holds predictions of another classifier (" + record.display() + " names " +
                  (had.empty() ? "none" : had) + (j.is_object() ? " from " + j.value("trained", "?") : "") +
                  "; this one is " + head.fingerprint() + "): resume with the classifier it was started with, or "
                  "choose a new OUTPUT");
    if (had_top != -1 && had_top != top)
      throw Error(output.display() + " holds the top " + std::to_string(had_top) + " classes of each photo (" +
                  record.display() + "); resume with --top " + std::to_string(had_top) + ", or choose a new OUTPUT");
    return;
  }
  storage::write_text(record, nlohmann::json({{"classifier", head.fingerprint()}, {"trained", storage::redact(trained)},
                                              {"embedding_model", head.embedding_model}, {"top", top}})
                                  .dump(2) + "\n");
}

struct Classifier {
  classify::Head head;
  std::string model_file;
};
// The classifier of a.classifier and the prepared model of a.model, checked to be the pair it was trained on.
Classifier load_classifier(const FeaturizeArgs& a) {
  Classifier c{classify::read_head(storage::open(a.classifier)), model::resolve(a.model)};
  classify::check_embedding_model(c.head, model::model_fingerprint(c.model_file), c.model_file);
  if (a.top < 1) throw Error("--top must be at least 1");
  return c;
}
}  // namespace

void run_classify(const FeaturizeArgs& a) {
  const auto input = storage::open(a.input);
  const auto output = storage::open(a.output);
  const auto c = load_classifier(a);
  const auto manifest = dataset::plan(
      input, output, {storage::redact(input.uri()), a.glob, a.limit, a.shard_size, model::model_fingerprint(c.model_file)});
  claim_for_classifier(output, c.head, a.classifier, a.top);
  std::fprintf(stderr, "classify: %zu images in %d shards, %d classes, model %s\n", manifest.items.size(),
               manifest.num_shards(), c.head.num_classes(), c.model_file.c_str());
  featurize::Options o{a.batch, a.threads, a.io_depth, !a.quiet};
  o.head = &c.head;
  o.top = a.top;
  const auto s = featurize::run(manifest, input, output, c.model_file, o);
  std::fprintf(stderr, "classify: done: %lld classified, %lld errors in %.1fs (%.1f images/s); %d of %d shards "
               "were already finished\n", static_cast<long long>(s.embedded), static_cast<long long>(s.failed),
               s.seconds, s.images_per_s, s.shards_skipped, s.shards);
  nlohmann::json j = {
      {"classifier", c.head.fingerprint()}, {"trained", storage::redact(a.classifier)}, {"top", a.top},
      {"embedding_model", c.head.embedding_model}, {"images", s.images}, {"classified_this_run", s.embedded},
      {"errors_this_run", s.failed}, {"shards", s.shards}, {"shards_skipped", s.shards_skipped},
      {"seconds", s.seconds}, {"images_per_s", s.images_per_s}, {"versions", versions()},
      {"options", {{"input", storage::redact(a.input)}, {"glob", a.glob}, {"batch", a.batch}, {"threads", a.threads},
                   {"top", a.top}, {"limit", a.limit}, {"shard_size", a.shard_size}}}};
  storage::write_text(layout::classify_json(output), j.dump(2) + "\n");
}

void run_train(const std::string& output_uri, const std::string& on, double holdout, std::uint64_t seed) {
  const auto output = storage::open(output_uri);
  const auto s = classify::train(output, {on, holdout, seed});
  std::fprintf(stderr,
               "train: done in %.1fs: %d classes on %d inputs (%s), l2 %g; block holdout (%lld photos): top-1 %.4f, "
               "top-5 %.4f; %s\n",
               s.seconds, s.classes, s.dim, on.c_str(), s.l2, static_cast<long long>(s.holdout_rows), s.top1, s.top5,
               layout::classifier_dir(output).display().c_str());
  run_report(output_uri);  // the report gains its classifier section
}

void run_pca(const PcaArgs& a) {
  const auto output = storage::open(a.output);
  pca::JobOptions o{a.variance, a.k, a.center, a.csv, 0};
  // Once the checks and the moments pass are done, before pca/ changes: no longer a validated run.
  o.before_writing = [&] { remove_success(output); };
  const auto s = pca::run_job(output, o);
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

// Writes OUTPUT/_SUCCESS (the last file of a run): counts, versions, the time, and extra's keys.
void write_success(const storage::Location& output, const validate::Counts& counts, const nlohmann::json& extra) {
  const std::time_t now = std::time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json j = {
      {"finished_at", when},
      {"counts", {{"inputs", counts.inputs}, {"embedded", counts.embedded}, {"errors", counts.errors}, {"k", counts.k}}},
      {"versions", versions()}};
  for (const auto& [k, v] : extra.items()) j[k] = v;
  storage::write_text(layout::success(output), storage::scrub(j.dump(2)) + "\n");
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
  pca::check_options({p.variance, p.k, p.center, p.csv, 0});  // before hours of featurizing, not after
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
  write_success(output, counts, {
      {"timings_s", {{"featurize", t_featurize}, {"pca", t_pca}, {"validate", t_validate}, {"report", t_report}, {"total", secs(t0)}}},
      {"options", {{"input", storage::redact(f.input)}, {"glob", f.glob}, {"batch", f.batch}, {"threads", f.threads},
                   {"limit", f.limit}, {"shard_size", f.shard_size}, {"model", storage::redact(f.model)},
                   {"variance", p.variance}, {"k", p.k}, {"center", p.center}}}});
  std::fprintf(stderr, "run: done in %.1fs: %s\n", secs(t0), output.display().c_str());
}

void run_plan(const FeaturizeArgs& a) {
  const auto input = storage::open(a.input);
  const auto output = storage::open(a.output);
  std::string fingerprint = a.model.empty() ? "" : model::model_fingerprint(model::resolve(a.model));
  std::optional<Classifier> c;
  if (!a.classifier.empty()) {
    c = load_classifier(a);
    fingerprint = model::model_fingerprint(c->model_file);
  }
  const auto m = dataset::plan(input, output, {storage::redact(input.uri()), a.glob, a.limit, a.shard_size, fingerprint});
  if (c) claim_for_classifier(output, c->head, a.classifier, a.top);  // may refuse: before anything changes
  remove_success(output);
  nlohmann::json finished = nlohmann::json::array();
  for (int s : table::part_shards(c ? layout::predictions_dir(output) : layout::features_dir(output)))
    if (s < m.num_shards()) finished.push_back(s);
  std::fprintf(stderr, "plan: %zu images in %d shards (%zu finished) from %s\n", m.items.size(), m.num_shards(),
               finished.size(), m.options.input.c_str());
  nlohmann::json j = {{"images", m.items.size()}, {"shards", m.num_shards()}, {"finished", finished},
                      {"input", m.options.input}, {"output", storage::redact(output.uri())}};
  std::printf("%s\n", j.dump().c_str());
}

void run_featurize_shards(const FeaturizeArgs& a, const std::string& shards) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto output = storage::open(a.output);
  const auto manifest = dataset::load_manifest(output);
  const auto input = storage::open(manifest.options.input);
  const auto list = dataset::parse_shard_list(shards, manifest.num_shards());
  featurize::Options o{a.batch, a.threads, a.io_depth, !a.quiet};
  std::optional<Classifier> c;
  if (!a.classifier.empty()) {
    c = load_classifier(a);
    claim_for_classifier(output, c->head, a.classifier, a.top);
    o.head = &c->head;
    o.top = a.top;
  }
  const std::string model_file = c ? c->model_file : model::resolve(a.model);
  dataset::check_model(manifest, model::model_fingerprint(model_file), output);
  const auto s = featurize::run(manifest, input, output, model_file, o, list);
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json j = {{"shards", list}, {"images", s.images}, {"embedded", s.embedded}, {"errors", s.failed},
                      {"skipped", s.shards_skipped}, {"featurize_seconds", s.seconds},
                      {"model_seconds", s.model_seconds}, {"process_seconds", total}};
  std::printf("%s\n", j.dump().c_str());
}

void run_moments(const std::string& output_uri, const std::string& shards, const std::string& out, int threads) {
  const auto output = storage::open(output_uri);
  const auto available = pca::feature_shards(output);
  const int n = available.empty() ? 0 : available.back() + 1;
  const auto list = dataset::parse_shard_list(shards, n);
  if (list.empty()) throw Error("--shards '" + shards + "' names no shard");
  for (int s : list)
    if (!std::binary_search(available.begin(), available.end(), s))
      throw Error(layout::feature_part(output, s).display() + " is missing; featurize that shard first");
  const auto m = pca::part_moments(output, list, threads);
  const auto file = out.empty() ? layout::moments_part(output, list.front()) : storage::open(out);
  if (out.empty()) {  // a file inside OUTPUT: no longer a validated run until commit
    remove_success(output);
    storage::make_dirs(layout::moments_dir(output));
  }
  pca::write_moments(file, m);
  nlohmann::json j = {{"shards", list}, {"rows", m.count}, {"file", storage::redact(file.display())}};
  if (out.empty()) j["part"] = list.front();
  std::printf("%s\n", j.dump().c_str());
}

void run_fit(const PcaArgs& a, const std::vector<std::string>& moments, const std::string& moments_parts) {
  const auto output = storage::open(a.output);
  pca::check_options({a.variance, a.k, a.center, "", 0});
  std::vector<storage::Location> files;
  for (const auto& f : moments) files.push_back(storage::open(f));
  if (!moments_parts.empty()) {  // part numbers are first shards: below the features parts' count
    const auto shards = pca::feature_shards(output);
    for (int p : dataset::parse_shard_list(moments_parts, shards.empty() ? 0 : shards.back() + 1))
      files.push_back(layout::moments_part(output, p));
  }
  pca::Moments all;
  for (const auto& f : files) all.merge(pca::read_moments(f));
  remove_success(output);  // OUTPUT's pca/ is about to change
  pca::JobSummary s;
  pca::fit_and_save(output, all, {a.variance, a.k, a.center, "", 0}, s);
  if (!moments_parts.empty()) {  // consumed: a rerun of the driver computes them again
    for (const auto& f : files) storage::remove(f);
    if (table::list_parts(layout::moments_dir(output)).empty()) storage::remove_dir(layout::moments_dir(output));
  }
  std::fprintf(stderr, "fit: %lld rows, k = %d (%.2f%% of the variance)\n", static_cast<long long>(s.rows), s.k,
               100 * s.cumulative);
  std::printf("%s\n", nlohmann::json({{"rows", s.rows}, {"k", s.k}, {"cumulative_explained_variance", s.cumulative}})
                          .dump().c_str());
}

void run_project(const std::string& output_uri, const std::string& shards, int threads) {
  const auto output = storage::open(output_uri);
  const auto model = pca::read_model(layout::pca_model(output));
  const auto available = pca::feature_shards(output);
  const auto list = dataset::parse_shard_list(shards, available.empty() ? 0 : available.back() + 1);
  pca::project_parts(output, model, list, threads);
  std::printf("%s\n", nlohmann::json({{"shards", list}, {"k", model.k}}).dump().c_str());
}

void run_commit(const std::string& output_uri, const std::string& info) {
  const auto output = storage::open(output_uri);
  nlohmann::json extra = nlohmann::json::object();
  if (!info.empty()) {
    try {
      extra = nlohmann::json::parse(info);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("--info is not a JSON object: ") + e.what());
    }
    if (!extra.is_object()) throw Error("--info must be a JSON object, e.g. '{\"timings_s\": {...}}'");
  }
  // The stages' own records, as `orchard featurize` and `orchard pca` write them (the report reads them).
  for (const auto& [key, file] : {std::pair{"featurize", layout::featurize_json(output)}, std::pair{"pca", layout::pca_json(output)}})
    if (extra.contains(key)) {
      storage::write_text(file, storage::scrub(extra[key].dump(2)) + "\n");
      extra.erase(key);
    }
  const auto counts = validate_or_throw(output);
  run_report(output_uri);
  write_success(output, counts, extra);
  std::fprintf(stderr, "commit: %s\n", layout::success(output).display().c_str());
  std::printf("%s\n", nlohmann::json({{"inputs", counts.inputs}, {"embedded", counts.embedded}, {"errors", counts.errors},
                                      {"k", counts.k}}).dump().c_str());
}

void run_prepare_model(const std::string& weights, const std::string& out) {
  const std::string path = model::prepare(weights, out);
  if (out.empty()) {
    const std::string def = model::default_model_path();
    std::error_code ec;
    const std::string tmp = layout::temporary_name(def, storage::host_name(), ::getpid(), 0);  // one per process
    std::filesystem::copy_file(path, tmp, std::filesystem::copy_options::overwrite_existing, ec);
    if (!ec) std::filesystem::rename(tmp, def, ec);
    std::error_code ignored;
    if (ec) std::filesystem::remove(tmp, ignored);
    if (ec) throw Error(def + ": cannot write the default model (" + ec.message() + "); set ORCHARD_CACHE to a writable folder");
  }
  std::printf("%s\n", path.c_str());
}

}  // namespace orchard::cli
