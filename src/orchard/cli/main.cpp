// orchard: fruit photos -> MobileNetV2 embeddings -> PCA, as Parquet (see README and design.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "orchard/cli/jobs.hpp"
#include "orchard/error.hpp"

int main(int argc, char** argv) {
  using namespace orchard::cli;
  CLI::App app{
      "orchard: turns a folder of fruit photos into ImageNet MobileNetV2 embeddings (1280 floats per\n"
      "image) and their PCA reduction, all as Parquet, with the numbers of the Keras/Spark notebooks.\n\n"
      "Typical use:\n"
      "  orchard run ../shared/data/fruits-360/Test out/fruits --model ../shared/models/mobilenet_v2_1.0_224_tfslim\n"
      "INPUT is a folder searched recursively; an image's label is its parent folder's name.\n"
      "Bad images never stop the job: they are listed in OUTPUT/errors/. Rerunning on the same\n"
      "OUTPUT resumes: finished shards are skipped.",
      "orchard"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);

  FeaturizeArgs fa;
  auto add_featurize_options = [&](CLI::App* c) {
    c->add_option("INPUT", fa.input, "folder of images (searched recursively)")->required();
    c->add_option("OUTPUT", fa.output, "output folder (created; a rerun resumes it)")->required();
    c->add_option("--model", fa.model,
                  "weights: a TF-slim .npy folder, a Keras *_no_top.h5 file, or a prepared .pt "
                  "(default: the one `orchard prepare-model` made default)");
    c->add_option("--glob", fa.glob, "file-name pattern, as Spark's pathGlobFilter")->capture_default_str();
    c->add_option("--batch", fa.batch, "images per forward pass")->capture_default_str()->check(CLI::Range(1, 1024));
    c->add_option("--threads", fa.threads, "worker threads (0 = one per core)")->capture_default_str()->check(CLI::Range(0, 256));
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
    c->add_option("--k", pa.k, "keep exactly K components (instead of --variance)")->check(CLI::Range(1, 1280))->excludes(var);
    c->add_flag("--center", pa.center, "mean-centred scores (default: MLlib's PCAModel.transform, no centring)");
    c->add_option("--csv", pa.csv, "also write path,label,pca_1..pca_k to this CSV file (the notebooks' last cell)");
  };
  auto* pca = app.add_subcommand("pca", "fit PCA on OUTPUT/features, write OUTPUT/pca and OUTPUT/pca_features");
  pca->add_option("OUTPUT", pa.output, "an OUTPUT of `orchard featurize`")->required();
  add_pca_options(pca);
  pca->callback([&] { run_pca(pa); });

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

  std::string weights, out;
  auto* prepare = app.add_subcommand(
      "prepare-model",
      "build the frozen TorchScript model from weights, cache it, and make it the default.\n"
      "WEIGHTS: the TF-slim .npy folder or the official Keras file\n"
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 (see README to download)");
  prepare->add_option("WEIGHTS", weights, "weights folder or .h5 file")->required();
  prepare->add_option("--out", out, "write the model here instead of the cache");
  prepare->callback([&] { run_prepare_model(weights, out); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const orchard::Error& e) {
    std::fprintf(stderr, "orchard: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "orchard: unexpected error: %s\n", e.what());
    return 2;
  }
  return 0;
}
