#pragma once
// `orchard train`: fits the classifier head on the labelled rows of a finished OUTPUT, choosing its
// L2 strength on a block holdout (photos the fit never saw), then refits on every row and writes
// OUTPUT/classifier/model.parquet and metrics.json.
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/storage/storage.hpp"

namespace orchard::classify {

struct TrainOptions {
  std::string on = "pca";  // "pca" (pca_features/, the default) or "features" (features/)
  double holdout = 0.1;    // share of frame blocks held out to choose L2 and measure accuracy
  std::uint64_t seed = 0;  // which blocks are held out; the same seed gives the same model
  bool quiet = false;
};

// Where a photo sits in its video, for the block holdout: Fruits-360 names frames "N_100.jpg",
// "r_N_100.jpg", "r2_N_100.jpg" (session prefix, frame number N). A name that does not follow
// the pattern is a session of its own (frame -1): it is held out or kept alone.
struct Frame {
  std::string session;  // "<label>/<prefix>", or "<label>/<file name>" when the name has no frame number
  int number = -1;
};
Frame frame_of(const std::string& path, const std::string& label);

// Frames per block, and the frames on each side of a held-out block left out of the fit (so no
// training photo is a near-twin of a held-out one).
inline constexpr int kBlockFrames = 20;
inline constexpr int kGuardFrames = 10;

// Which rows are held out (1), guard (2: used by neither side while choosing), or training (0):
// round(holdout x blocks) blocks of kBlockFrames consecutive frame numbers of one session, drawn
// with seed.
std::vector<std::uint8_t> block_holdout(const std::vector<std::string>& paths, const std::vector<std::string>& labels,
                                        double holdout, std::uint64_t seed);

struct TrainSummary {
  std::int64_t rows = 0, train_rows = 0, holdout_rows = 0, guard_rows = 0;
  int classes = 0, dim = 0;
  double l2 = 0, top1 = 0, top5 = 0, seconds = 0;
};

// Trains on OUTPUT (local or s3://, finished by `orchard run` or the Spark driver) and writes
// OUTPUT/classifier/. Throws orchard::Error naming what is missing (pca/, features/) and the fix.
TrainSummary train(const storage::Location& output, const TrainOptions& options);

}  // namespace orchard::classify
