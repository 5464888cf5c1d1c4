// orchard: fruit photos -> MobileNetV2 embeddings -> PCA, as Parquet (see README and design.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "orchard/classify/train.hpp"
#include "orchard/cli/jobs.hpp"
#include "orchard/serve/server.hpp"
#include "orchard/error.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/storage/storage.hpp"

namespace {
// A command-line usage error: the reason, the usage line of the (sub)command and the --help hint
// on stderr, exit status 2 (as POSIX utilities and argparse do).
int usage_error(const CLI::App& app, const CLI::ParseError& e) {
  const CLI::App* where = &app;
  std::string name = app.get_name();
  while (!where->get_subcommands().empty()) {
    where = where->get_subcommands().front();
    name += " " + where->get_name();
  }
  std::string usage;
  if (const auto f = std::dynamic_pointer_cast<CLI::Formatter>(where->get_formatter()))
    usage = f->make_usage(where, name);
  while (!usage.empty() && usage.back() == '\n') usage.pop_back();
  std::fprintf(stderr, "orchard: %s\n%s\nRun `%s --help` for more information.\n", e.what(), usage.c_str(), name.c_str());
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace orchard::cli;
  CLI::App app{
      "orchard: turns a folder of fruit photos into ImageNet MobileNetV2 embeddings (1280 floats per\n"
      "image) and their PCA reduction, all as Parquet, with the numbers of the Keras/Spark notebooks;\n"
      "then trains a fruit classifier on them, classifies photo stores and serves photos over HTTP.\n\n"
      "Typical use:\n"
      "  orchard run ../shared/data/fruits-360/Test out/fruits --model ../shared/models/mobilenet_v2_1.0_224_tfslim\n"
      "  orchard run s3://bucket/fruits/Test s3://bucket/out/fruits --model s3://bucket/models/mobilenet.ov\n"
      "  orchard train out/fruits && orchard serve --classifier out/fruits --model ../shared/models/mobilenet_v2_1.0_224_tfslim\n"
      "INPUT is a folder or s3:// prefix searched recursively; an image's label is its parent folder's name.\n"
      "S3 is configured the AWS way: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance\n"
      "role; AWS_REGION; AWS_ENDPOINT_URL_S3 for an S3-compatible store. Keys are never printed or stored.\n"
      "Bad images never stop the job: they are listed in OUTPUT/errors/. Rerunning on the same\n"
      "OUTPUT resumes: finished shards are skipped.",
      "orchard"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);

  FeaturizeArgs fa;
  std::string target_train;
  auto add_featurize_options = [&](CLI::App* c) {
    c->add_option("INPUT", fa.input, "folder or s3://bucket/prefix of images (searched recursively)")->required();
    c->add_option("OUTPUT", fa.output, "output folder or s3://bucket/prefix (a rerun resumes it)")->required();
    c->add_option("--model", fa.model,
                  "weights: a TF-slim .npy folder, a Keras *_no_top.h5 file, or a prepared .ov (local or s3://) "
                  "(default: the one `orchard prepare-model` made default)");
    c->add_option("--glob", fa.glob, "file-name pattern, as Spark's pathGlobFilter")->capture_default_str();
    c->add_option("--batch", fa.batch, "images per forward pass")->capture_default_str()->check(CLI::Range(1, 1024));
    c->add_option("--threads", fa.threads, "worker threads (0 = one per core)")->capture_default_str()->check(CLI::Range(0, 256));
    c->add_option("--io-depth", fa.io_depth, "image reads in flight (0 = 32 on S3, 4 on a local disk)")->capture_default_str()->check(CLI::Range(0, 512));
    c->add_option("--limit", fa.limit, "only the first N files in path order (0 = all)")->capture_default_str();
    c->add_option("--shard-size", fa.shard_size, "images per output part (the unit of resume)")->capture_default_str()->check(CLI::Range(1, 20000));
    c->add_flag("--quiet", fa.quiet, "no progress line");
  };
  auto* featurize = app.add_subcommand("featurize", "embed every image of INPUT into OUTPUT/features (+ errors)");
  add_featurize_options(featurize);
  featurize->callback([&] { run_featurize(fa); });

  PcaArgs pa;
  auto add_pca_options = [&](CLI::App* c) {
    auto* var = c->add_option("--variance", pa.variance, "keep the fewest components explaining this share of the variance")
                    ->capture_default_str()->check(CLI::Range(0.0, 1.0));
    c->add_option("--k", pa.k, "keep exactly K components (instead of --variance)")->check(CLI::Range(1, orchard::model::kEmbeddingDim))->excludes(var);
    c->add_flag("--center", pa.center, "mean-centred scores (default: MLlib's PCAModel.transform, no centring)");
    c->add_option("--csv", pa.csv, "also write path,label,pca_1..pca_k to this CSV file or s3:// object (the notebooks' last cell)");
  };
  auto* pca = app.add_subcommand("pca", "fit PCA on OUTPUT/features, write OUTPUT/pca and OUTPUT/pca_features");
  pca->add_option("OUTPUT", pa.output, "an OUTPUT of `orchard featurize`")->required();
  add_pca_options(pca);
  pca->callback([&] { run_pca(pa); });

  std::string on = orchard::classify::TrainOptions{}.on;
  double holdout = orchard::classify::TrainOptions{}.holdout;
  std::uint64_t seed = orchard::classify::TrainOptions{}.seed;
  auto* train = app.add_subcommand(
      "train",
      "fit the fruit classifier (softmax regression, L2 chosen on a block holdout of frames, then refit on\n"
      "every row) on a finished OUTPUT; writes OUTPUT/classifier/model.parquet and metrics.json");
  train->add_option("OUTPUT", target_train, "a finished OUTPUT of `orchard run` (or the Spark driver), local or s3://")->required();
  train->add_option("--on", on, "what the classifier reads: pca (the PCA scores) or features (the 1280 floats)")
      ->capture_default_str()->check(CLI::IsMember({"pca", "features"}));
  train->add_option("--holdout", holdout, "share of frame blocks held out to choose L2 and measure accuracy")
      ->capture_default_str()->check(CLI::Range(0.01, 0.5));
  train->add_option("--seed", seed, "which blocks are held out (the same seed gives the same model)")->capture_default_str();
  train->callback([&] { run_train(target_train, on, holdout, seed); });

  auto* classify_cmd = app.add_subcommand(
      "classify",
      "classify every photo of INPUT with TRAINED's classifier: OUTPUT/predictions/part-NNNNN.parquet\n"
      "(path, label, top_labels, top_probabilities) + errors/, with featurize's shards and resume");
  add_featurize_options(classify_cmd);
  classify_cmd->add_option("--classifier", fa.classifier, "TRAINED: an OUTPUT holding pca/ and classifier/ (`orchard train`)")
      ->required();
  classify_cmd->add_option("--top", fa.top, "classes kept per photo, best first")->capture_default_str()->check(CLI::Range(1, 10000));
  classify_cmd->callback([&] { run_classify(fa); });

  orchard::serve::Options so;
  auto* serve_cmd = app.add_subcommand(
      "serve",
      "serve the classifier over HTTP/1.1: POST /v1/classify (a photo as the body, or multipart field\n"
      "'image'; ?top=K), GET / (a page to take or pick a photo), /healthz, /readyz, /metrics (Prometheus).\n"
      "Requests are batched onto a fixed pool of inference workers through a bounded queue (503 when full).\n"
      "SIGTERM stops accepting, finishes the requests in flight, exits 0.");
  serve_cmd->add_option("--classifier", so.trained, "TRAINED: an OUTPUT holding pca/ and classifier/")->required();
  serve_cmd->add_option("--model", so.model, "the model TRAINED was featurized with (as for featurize)");
  serve_cmd->add_option("--host", so.host, "address to bind (loopback unless told otherwise)")->capture_default_str();
  serve_cmd->add_option("--port", so.port, "port (0 = any free port; the listening line says which)")->capture_default_str()->check(CLI::Range(0, 65535));
  serve_cmd->add_option("--catalog", so.catalog, "CSV (label,field,...) or JSON {label: {...}} of what the app shows per label");
  serve_cmd->add_option("--workers", so.workers, "inference workers, one core each (0 = one per core)")->capture_default_str()->check(CLI::Range(0, 256));
  serve_cmd->add_option("--max-batch", so.max_batch, "requests batched into one inference call at most")->capture_default_str()->check(CLI::Range(1, 256));
  serve_cmd->add_option("--max-delay-ms", so.max_delay_ms, "how long a batch waits to fill")->capture_default_str()->check(CLI::Range(0, 1000));
  serve_cmd->add_option("--queue", so.queue, "photos waiting for a worker at most; more get 503 + Retry-After")->capture_default_str()->check(CLI::Range(1, 100000));
  serve_cmd->add_option("--max-body", so.max_body, "largest request body in bytes (413 beyond)")->capture_default_str()->check(CLI::Range(1, 1 << 30));
  serve_cmd->add_option("--read-timeout", so.read_timeout_s, "seconds a client has to send a whole request")->capture_default_str()->check(CLI::Range(1, 3600));
  serve_cmd->add_option("--max-connections", so.max_connections, "open connections at most; more are closed at once")->capture_default_str()->check(CLI::Range(1, 100000));
  serve_cmd->add_option("--io-threads", so.io_threads, "threads reading requests and decoding photos (0 = 2 per core, at least 4)")->capture_default_str()->check(CLI::Range(0, 256));
  serve_cmd->callback([&] { orchard::serve::run(so); });

  std::string target;
  auto* validate = app.add_subcommand("validate", "read every table of OUTPUT back and check the output contract");
  validate->add_option("OUTPUT", target)->required();
  validate->callback([&] { run_validate(target); });

  auto* report = app.add_subcommand("report", "write OUTPUT/report/index.html (offline, charts inline)");
  report->add_option("OUTPUT", target)->required();
  report->callback([&] { run_report(target); });

  auto* run = app.add_subcommand("run", "the main job: featurize, pca, validate, report, then OUTPUT/_SUCCESS");
  add_featurize_options(run);
  add_pca_options(run);
  run->callback([&] { run_all(fa, pa); });

  // The steps of a distributed run (spark/orchard_spark.py): the same stage code as `run`, each
  // printing one JSON line on stdout. They share these variables.
  std::string shards, step_out, info;
  std::vector<std::string> moments;
  int step_threads = 0;
  auto* plan = app.add_subcommand("plan", "step: list INPUT, write OUTPUT/_manifest.parquet, print the shard count (JSON)");
  plan->add_option("INPUT", fa.input, "folder or s3://bucket/prefix of images")->required();
  plan->add_option("OUTPUT", fa.output, "output folder or s3://bucket/prefix")->required();
  plan->add_option("--glob", fa.glob, "file-name pattern, as Spark's pathGlobFilter")->capture_default_str();
  plan->add_option("--limit", fa.limit, "only the first N files in path order (0 = all)")->capture_default_str();
  plan->add_option("--shard-size", fa.shard_size, "images per output part")->capture_default_str()->check(CLI::Range(1, 20000));
  plan->add_option("--model", fa.model, "the model the shards will be featurized with (its fingerprint is recorded, "
                                        "so that no task mixes in another model)");
  plan->add_option("--classifier", fa.classifier, "classify: TRAINED (claims OUTPUT for it; finished = predictions parts)");
  plan->add_option("--top", fa.top, "classify: classes kept per photo (claimed with the classifier)")->capture_default_str()->check(CLI::Range(1, 10000));
  plan->callback([&] { run_plan(fa); });

  auto* fshards = app.add_subcommand(
      "featurize-shards", "step: featurize some shards of a planned OUTPUT in this process (the model loaded once)");
  fshards->add_option("OUTPUT", fa.output, "an OUTPUT that `orchard plan` made")->required();
  fshards->add_option("--shards", shards, "shard numbers, e.g. 0,3,5-7")->required();
  fshards->add_option("--model", fa.model, "as for featurize");
  fshards->add_option("--batch", fa.batch, "images per forward pass")->capture_default_str()->check(CLI::Range(1, 1024));
  fshards->add_option("--threads", fa.threads, "worker threads (0 = one per core; Spark: spark.task.cpus)")->capture_default_str()->check(CLI::Range(0, 256));
  fshards->add_option("--io-depth", fa.io_depth, "image reads in flight (0 = 32 on S3, 4 on a local disk)")->capture_default_str()->check(CLI::Range(0, 512));
  fshards->add_flag("--quiet", fa.quiet, "no progress line");
  fshards->add_option("--classifier", fa.classifier, "classify: TRAINED (writes predictions/ instead of features/)");
  fshards->add_option("--top", fa.top, "classify: classes kept per photo")->capture_default_str()->check(CLI::Range(1, 10000));
  fshards->callback([&] { run_featurize_shards(fa, shards); });

  auto* mom = app.add_subcommand("moments", "step: PCA moments (count, sum, packed Gram) of some features parts");
  mom->add_option("OUTPUT", target, "an OUTPUT with features/")->required();
  mom->add_option("--shards", shards, "part numbers, e.g. 0-9")->required();
  mom->add_option("--out", step_out, "the moments file to write (Parquet; local or s3://; default OUTPUT/moments/part-FIRST.parquet)");
  mom->add_option("--threads", step_threads, "parts read at once (0 = one per core)")->capture_default_str();
  mom->callback([&] { run_moments(target, shards, step_out, step_threads); });

  auto* fit = app.add_subcommand("fit", "step: merge moments files, fit PCA, write OUTPUT/pca/");
  fit->add_option("OUTPUT", pa.output, "an OUTPUT with features/")->required();
  auto* fit_files = fit->add_option("--moments", moments, "moments files from `orchard moments --out` (merged)");
  fit->add_option("--moments-parts", shards,
                  "part numbers of OUTPUT/moments/ that `orchard moments` wrote, e.g. 0,12,24 (merged, then deleted)")
      ->excludes(fit_files);
  add_pca_options(fit);
  fit->callback([&] {
    if (moments.empty() && shards.empty()) throw CLI::RequiredError("--moments or --moments-parts");
    run_fit(pa, moments, shards);
  });

  auto* proj = app.add_subcommand("project", "step: project some features parts with OUTPUT/pca/model.parquet");
  proj->add_option("OUTPUT", target, "an OUTPUT with features/ and pca/")->required();
  proj->add_option("--shards", shards, "part numbers, e.g. 0-9")->required();
  proj->add_option("--threads", step_threads, "parts projected at once (0 = one per core)")->capture_default_str();
  proj->callback([&] { run_project(target, shards, step_threads); });

  auto* commit = app.add_subcommand("commit", "step: record the stages, validate OUTPUT, write the report, then _SUCCESS last");
  commit->add_option("OUTPUT", target)->required();
  commit->add_option("--info", info, "a JSON object: its \"featurize\" and \"pca\" objects become _featurize.json and _pca.json, its other keys (timings, options) go into _SUCCESS");
  commit->callback([&] { run_commit(target, info); });

  std::string weights, out;
  auto* prepare = app.add_subcommand(
      "prepare-model",
      "build the MobileNetV2 graph from weights for OpenVINO, cache it as a prepared .ov file, and make\n"
      "it the default (later runs need no --model).\n"
      "WEIGHTS: the TF-slim .npy folder or the official Keras file\n"
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 (see README to download)");
  prepare->add_option("WEIGHTS", weights, "weights folder or .h5 file")->required();
  prepare->add_option("--out", out, "write the model here instead of the cache");
  prepare->callback([&] { run_prepare_model(weights, out); });

  int rc = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    rc = e.get_exit_code() == 0 ? app.exit(e) : usage_error(app, e);  // --help and --version exit 0
  } catch (const orchard::Error& e) {
    std::fprintf(stderr, "orchard: %s\n", orchard::storage::scrub(e.what()).c_str());
    rc = 1;
  } catch (const std::exception& e) {  // not one of Orchard's (out of memory, a library's): the job could not run
    std::fprintf(stderr, "orchard: unexpected error: %s\n", orchard::storage::scrub(e.what()).c_str());
    rc = 1;
  }
  orchard::storage::shutdown();  // Arrow requires S3 to be finalised before exit
  return rc;
}
