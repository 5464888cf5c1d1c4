#include "orchard/classify/train.hpp"

#include <cblas.h>
#include <lbfgs.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>

#include "orchard/classify/head.hpp"
#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::classify {
namespace {

using Clock = std::chrono::steady_clock;

// The L2 strengths tried, strongest first (each fit starts from the previous one's weights).
constexpr double kL2Grid[] = {1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5};
constexpr int kMaxIterations = 300;

struct Rows {
  std::vector<std::string> paths, labels;
  std::vector<double> x;  // rows x dim
  int dim = 0;
  std::size_t size() const { return paths.size(); }
};

Rows read_rows(const storage::Location& output, const std::string& on) {
  const auto dir = on == kOnPca ? layout::pca_features_dir(output) : layout::features_dir(output);
  const auto parts = table::list_parts(dir);
  if (parts.empty())
    throw Error(dir.display() + " holds no parts; run `orchard run INPUT " + output.display() + "` first");
  Rows r;
  for (const auto& part : parts)
    table::for_each_batch(part, on, r.dim, 4096, [&](const table::VectorRows& b) {
      r.dim = b.dim;
      r.paths.insert(r.paths.end(), b.paths.begin(), b.paths.end());
      r.labels.insert(r.labels.end(), b.labels.begin(), b.labels.end());
      r.x.insert(r.x.end(), b.values.begin(), b.values.end());
    });
  return r;
}

// Softmax regression with L2 on the weights (not the bias), on standardized rows.
struct Problem {
  const double* x = nullptr;  // n x d
  const int* y = nullptr;     // n
  std::int64_t n = 0;
  int d = 0, c = 0;
  double l2 = 0;
  std::vector<double> z;  // n x c scratch
};

// Mean cross-entropy + l2/2 |W|^2 and its gradient; v = [W (c x d), b (c)].
double loss_and_gradient(Problem& p, const double* v, double* g) {
  const double* w = v;
  const double* b = v + static_cast<std::size_t>(p.c) * p.d;
  p.z.resize(static_cast<std::size_t>(p.n) * p.c);
  for (std::int64_t i = 0; i < p.n; ++i) std::copy(b, b + p.c, p.z.data() + i * p.c);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.n), p.c, p.d, 1.0, p.x, p.d, w, p.d, 1.0,
              p.z.data(), p.c);
  double loss = 0;
  const double inv_n = 1.0 / static_cast<double>(p.n);
  double* gb = g + static_cast<std::size_t>(p.c) * p.d;
  std::fill(gb, gb + p.c, 0.0);
  for (std::int64_t i = 0; i < p.n; ++i) {  // z becomes (softmax - onehot) / n
    double* zi = p.z.data() + i * p.c;
    const double top = *std::max_element(zi, zi + p.c);
    double sum = 0;
    for (int k = 0; k < p.c; ++k) sum += std::exp(zi[k] - top);
    loss += top + std::log(sum) - zi[p.y[i]];
    for (int k = 0; k < p.c; ++k) zi[k] = std::exp(zi[k] - top) / sum * inv_n;
    zi[p.y[i]] -= inv_n;
    for (int k = 0; k < p.c; ++k) gb[k] += zi[k];
  }
  std::copy(w, w + static_cast<std::size_t>(p.c) * p.d, g);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.c, p.d, static_cast<int>(p.n), 1.0, p.z.data(), p.c, p.x,
              p.d, p.l2, g, p.d);
  double norm = 0;
  for (std::size_t j = 0; j < static_cast<std::size_t>(p.c) * p.d; ++j) norm += w[j] * w[j];
  return loss * inv_n + 0.5 * p.l2 * norm;
}

lbfgsfloatval_t evaluate(void* instance, const lbfgsfloatval_t* v, lbfgsfloatval_t* g, int, lbfgsfloatval_t) {
  return loss_and_gradient(*static_cast<Problem*>(instance), v, g);
}

// Minimizes from v (warm start) in place. Converged, stopped by the delta test, at the iteration cap
// or on a line search that can go no further (a flat minimum) leave a usable minimum; any other
// status of libLBFGS, or a loss or weight that is not finite, throws.
void fit(Problem& p, std::vector<double>& v) {
  lbfgs_parameter_t param;
  lbfgs_parameter_init(&param);
  param.max_iterations = kMaxIterations;
  param.epsilon = 1e-6;
  param.past = 5;
  param.delta = 1e-9;
  lbfgsfloatval_t fx = 0;
  const int status = lbfgs(static_cast<int>(v.size()), v.data(), &fx, evaluate, nullptr, &p, &param);
  const bool usable = status == LBFGS_SUCCESS || status == LBFGS_STOP || status == LBFGS_ALREADY_MINIMIZED ||
                      status == LBFGSERR_MAXIMUMITERATION || status == LBFGSERR_ROUNDING_ERROR ||
                      status == LBFGSERR_MAXIMUMLINESEARCH || status == LBFGSERR_MINIMUMSTEP ||
                      status == LBFGSERR_MAXIMUMSTEP;
  const bool finite = std::isfinite(fx) && std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
  if (!usable || !finite)
    throw Error("training failed (libLBFGS status " + std::to_string(status) + (finite ? "" : ", non-finite weights") +
                ", L2 " + std::to_string(p.l2) + "); check the inputs for extreme values, or try --on pca");
}

struct Evaluation {
  double top1 = 0, top5 = 0, log_loss = 0;
  std::vector<int> predicted;           // per row
  std::vector<double> predicted_prob;   // per row
};

Evaluation evaluate_rows(const Head& h, const std::vector<double>& x, const std::vector<int>& y) {
  const std::int64_t n = static_cast<std::int64_t>(y.size());
  std::vector<double> p(static_cast<std::size_t>(n) * h.num_classes());
  h.probabilities(x.data(), n, p.data());
  Evaluation e;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto r = top_k(p.data() + i * h.num_classes(), h.num_classes(), 5);
    e.top1 += r.classes[0] == y[i];
    e.top5 += std::find(r.classes.begin(), r.classes.end(), y[i]) != r.classes.end();
    e.log_loss -= std::log(std::max(p[i * h.num_classes() + y[i]], 1e-300));
    e.predicted.push_back(r.classes[0]);
    e.predicted_prob.push_back(r.probabilities[0]);
  }
  if (n > 0) e.top1 /= n, e.top5 /= n, e.log_loss /= n;
  return e;
}

// Standardization of the chosen rows: mean and (population) standard deviation, 1 where it is 0.
void standardization(const std::vector<double>& x, int d, const std::vector<std::int64_t>& rows, Head& h) {
  h.mean.assign(d, 0.0);
  h.scale.assign(d, 0.0);
  for (auto r : rows)
    for (int j = 0; j < d; ++j) h.mean[j] += x[r * d + j];
  for (auto& m : h.mean) m /= static_cast<double>(rows.size());
  for (auto r : rows)
    for (int j = 0; j < d; ++j) h.scale[j] += (x[r * d + j] - h.mean[j]) * (x[r * d + j] - h.mean[j]);
  for (auto& s : h.scale) s = s > 0 ? std::sqrt(s / static_cast<double>(rows.size())) : 1.0;
}

// Fits h (standardization, weights, bias) on the given rows with l2, starting from v.
void fit_head(const Rows& data, const std::vector<int>& y, const std::vector<std::int64_t>& rows, double l2, Head& h,
              std::vector<double>& v) {
  const int d = data.dim;
  standardization(data.x, d, rows, h);
  std::vector<double> z(rows.size() * d);
  std::vector<int> yz(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (int j = 0; j < d; ++j) z[i * d + j] = (data.x[rows[i] * d + j] - h.mean[j]) / h.scale[j];
    yz[i] = y[rows[i]];
  }
  Problem p;
  p.x = z.data();
  p.y = yz.data();
  p.n = static_cast<std::int64_t>(rows.size());
  p.d = d;
  p.c = h.num_classes();
  p.l2 = l2;
  fit(p, v);
  h.weights.assign(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(p.c) * d);
  h.bias.assign(v.begin() + static_cast<std::ptrdiff_t>(p.c) * d, v.end());
  h.l2 = l2;
}

}  // namespace

Frame frame_of(const std::string& path, const std::string& label) {
  static const std::regex pattern(R"(^(?:(r\d*)_)?(\d{1,9})_100\.jpg$)", std::regex::icase);
  const std::string name = path.substr(path.find_last_of('/') + 1);
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return {label + "/" + name, -1};
  return {label + "/" + m[1].str(), std::stoi(m[2].str())};
}

std::vector<std::uint8_t> block_holdout(const std::vector<std::string>& paths, const std::vector<std::string>& labels,
                                        double holdout, std::uint64_t seed) {
  std::vector<Frame> frames;
  std::set<std::pair<std::string, int>> blocks;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    frames.push_back(frame_of(paths[i], labels[i]));
    blocks.insert({frames.back().session, frames.back().number < 0 ? 0 : frames.back().number / kBlockFrames});
  }
  std::vector<std::pair<std::string, int>> order(blocks.begin(), blocks.end());
  std::mt19937_64 rng(seed);
  for (std::size_t i = order.size(); i > 1; --i)  // Fisher-Yates with our own draws: the same on every libstdc++
    std::swap(order[i - 1], order[rng() % i]);
  const auto held_count = static_cast<std::size_t>(std::llround(holdout * static_cast<double>(order.size())));
  const std::set<std::pair<std::string, int>> held(order.begin(), order.begin() + std::min(held_count, order.size()));
  std::vector<std::uint8_t> side(paths.size(), 0);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const auto& f = frames[i];
    if (f.number < 0) {
      side[i] = held.count({f.session, 0}) ? 1 : 0;
      continue;
    }
    if (held.count({f.session, f.number / kBlockFrames})) {
      side[i] = 1;
    } else if (held.count({f.session, (f.number + kGuardFrames) / kBlockFrames}) ||
               (f.number >= kGuardFrames && held.count({f.session, (f.number - kGuardFrames) / kBlockFrames}))) {
      side[i] = 2;
    }
  }
  return side;
}

TrainSummary train(const storage::Location& output, const TrainOptions& o) {
  const auto t0 = Clock::now();
  if (o.on != kOnPca && o.on != kOnFeatures) throw Error("--on must be pca or features, not '" + o.on + "'");
  if (!(o.holdout > 0 && o.holdout < 1)) throw Error("--holdout must be between 0 and 1 (exclusive)");
  if (!storage::exists(layout::success(output)))
    throw Error(output.display() + " is not a finished OUTPUT (no _SUCCESS); run `orchard run INPUT " +
                output.display() + "` (or the Spark driver) first");
  const auto manifest = dataset::load_manifest(output);
  Head h;
  h.on = o.on;
  h.embedding_model = manifest.options.model;
  if (h.embedding_model.empty() && !o.quiet)
    std::fprintf(stderr, "train: warning: %s records no model fingerprint (planned without --model), so classify and "
                 "serve cannot check that they use the model it was featurized with; pass that --model to them\n",
                 layout::manifest(output).display().c_str());
  if (o.on == kOnPca) {
    h.use_pca(pca::read_model(layout::pca_model(output)));
  }
  const Rows data = read_rows(output, o.on);
  if (o.on == kOnPca && data.dim != h.pca.k)
    throw Error(layout::pca_features_dir(output).display() + " holds " + std::to_string(data.dim) +
                " scores per row, pca/model.parquet has k = " + std::to_string(h.pca.k) + "; rerun `orchard pca`");
  h.dim = data.dim;
  const std::set<std::string> labels(data.labels.begin(), data.labels.end());
  h.classes.assign(labels.begin(), labels.end());
  if (h.classes.size() < 2)
    throw Error(output.display() + " has " + std::to_string(h.classes.size()) +
                " label(s); a classifier needs photos in at least two folders");
  std::vector<int> y(data.size());
  for (std::size_t i = 0; i < data.size(); ++i)
    y[i] = static_cast<int>(std::lower_bound(h.classes.begin(), h.classes.end(), data.labels[i]) - h.classes.begin());
  const auto side = block_holdout(data.paths, data.labels, o.holdout, o.seed);
  std::vector<std::int64_t> train_rows, held_rows, all_rows;
  for (std::size_t i = 0; i < data.size(); ++i) {
    all_rows.push_back(static_cast<std::int64_t>(i));
    if (side[i] == 0) train_rows.push_back(static_cast<std::int64_t>(i));
    if (side[i] == 1) held_rows.push_back(static_cast<std::int64_t>(i));
  }
  if (train_rows.empty() || held_rows.empty())
    throw Error(output.display() + ": too few photos to hold out " + std::to_string(o.holdout) +
                " of the frame blocks and still train; use more photos or another --holdout");
  std::vector<double> held_x;
  std::vector<int> held_y;
  for (auto r : held_rows) {
    held_x.insert(held_x.end(), data.x.begin() + r * data.dim, data.x.begin() + (r + 1) * data.dim);
    held_y.push_back(y[r]);
  }
  const auto log = [&](const char* fmt, auto... args) {
    if (!o.quiet) std::fprintf(stderr, fmt, args...);
  };
  log("train: %zu rows, %zu classes, %d inputs (%s); block holdout %zu rows, training %zu, guard %zu\n", data.size(),
      h.classes.size(), data.dim, o.on.c_str(), held_rows.size(), train_rows.size(),
      data.size() - train_rows.size() - held_rows.size());

  // Choose L2 on the holdout (strongest first, warm starts), keep the best top-1 (then log loss).
  std::vector<double> v(static_cast<std::size_t>(h.num_classes()) * (data.dim + 1), 0.0), best_v;
  nlohmann::json tried = nlohmann::json::array();
  Head best = h;
  Evaluation best_eval;
  bool have_best = false;
  for (double l2 : kL2Grid) {
    Head cand = h;
    fit_head(data, y, train_rows, l2, cand, v);
    const auto e = evaluate_rows(cand, held_x, held_y);
    tried.push_back({{"l2", l2}, {"top1", e.top1}, {"top5", e.top5}, {"log_loss", e.log_loss}});
    log("train: l2 %g: holdout top-1 %.4f top-5 %.4f log loss %.4f\n", l2, e.top1, e.top5, e.log_loss);
    if (!have_best || e.top1 > best_eval.top1 || (e.top1 == best_eval.top1 && e.log_loss < best_eval.log_loss)) {
      best = cand, best_eval = e, best_v = v, have_best = true;
    }
  }

  // The holdout report of the chosen model.
  const int c = h.num_classes();
  std::vector<std::int64_t> tp(c, 0), fp(c, 0), fn(c, 0);
  std::map<std::pair<int, int>, int> confused;
  nlohmann::json wrong = nlohmann::json::array();
  for (std::size_t i = 0; i < held_rows.size(); ++i) {
    const int t = held_y[i], p = best_eval.predicted[i];
    if (t == p) {
      ++tp[t];
      continue;
    }
    ++fp[p], ++fn[t], ++confused[{t, p}];
    if (wrong.size() < 24)
      wrong.push_back({{"path", data.paths[held_rows[i]]}, {"label", h.classes[t]}, {"predicted", h.classes[p]},
                       {"probability", best_eval.predicted_prob[i]}});
  }
  nlohmann::json per_class = nlohmann::json::array();
  for (int k = 0; k < c; ++k) {
    const double prec = tp[k] + fp[k] ? double(tp[k]) / double(tp[k] + fp[k]) : 0.0;
    const double rec = tp[k] + fn[k] ? double(tp[k]) / double(tp[k] + fn[k]) : 0.0;
    per_class.push_back({{"class", h.classes[k]}, {"precision", prec}, {"recall", rec},
                         {"f1", prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0.0}, {"support", tp[k] + fn[k]}});
  }
  std::vector<std::pair<int, std::pair<int, int>>> pairs;
  for (const auto& [k, n] : confused) pairs.push_back({n, k});
  std::stable_sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  nlohmann::json confused_json = nlohmann::json::array();
  for (std::size_t i = 0; i < pairs.size() && i < 15; ++i)
    confused_json.push_back({{"label", h.classes[pairs[i].second.first]},
                             {"predicted", h.classes[pairs[i].second.second]}, {"count", pairs[i].first}});
  const double select_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  // Refit on every row with the chosen strength, from the chosen weights.
  Head final_head = h;
  fit_head(data, y, all_rows, best.l2, final_head, best_v);
  log("train: chose l2 %g; refit on all %zu rows\n", best.l2, data.size());
  storage::make_dirs(layout::classifier_dir(output));
  write_head(layout::classifier_model(output), final_head);

  TrainSummary s;
  s.rows = static_cast<std::int64_t>(data.size());
  s.train_rows = static_cast<std::int64_t>(train_rows.size());
  s.holdout_rows = static_cast<std::int64_t>(held_rows.size());
  s.guard_rows = s.rows - s.train_rows - s.holdout_rows;
  s.classes = c;
  s.dim = data.dim;
  s.l2 = best.l2;
  s.top1 = best_eval.top1;
  s.top5 = best_eval.top5;
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json m = {
      {"holdout",
       {{"top1", s.top1}, {"top5", s.top5}, {"log_loss", best_eval.log_loss}, {"rows", s.holdout_rows},
        {"method", "block holdout: " + std::to_string(o.holdout) + " of the blocks of " +
                       std::to_string(kBlockFrames) + " consecutive frame numbers of one video (label + session), "
                       "frames within " + std::to_string(kGuardFrames) + " of a held-out block left out of the fit"},
        {"seed", o.seed}}},
      {"l2", s.l2},
      {"l2_tried", tried},
      {"per_class", per_class},
      {"confused_pairs", confused_json},
      {"misclassified", wrong},
      {"sizes",
       {{"rows", s.rows}, {"train_rows", s.train_rows}, {"guard_rows", s.guard_rows}, {"holdout_rows", s.holdout_rows},
        {"classes", c}, {"inputs", data.dim}, {"on", o.on}}},
      {"timings", {{"choose_seconds", select_seconds}, {"total_seconds", s.seconds}}},
      {"classifier", final_head.fingerprint()},
      {"embedding_model", final_head.embedding_model},
      {"pca_fingerprint", final_head.pca_fingerprint}};
  storage::write_text(layout::classifier_metrics(output),
                      m.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  return s;
}

}  // namespace orchard::classify
