#pragma once
// The classifier head: softmax regression on standardized PCA scores (or raw embeddings), as
// `orchard train` fits it and as classify and serve apply it to fresh embeddings. It is stored in
// TRAINED/classifier/model.parquet beside the PCA it expects; reading it checks that PCA's fingerprint.
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/pca/files.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::classify {

// What a head reads: "pca" (the scores of TRAINED/pca/model.parquet) or "features" (the 1280 floats).
inline constexpr const char* kOnPca = "pca";
inline constexpr const char* kOnFeatures = "features";

struct Head {
  std::string on = kOnPca;
  int dim = 0;                      // inputs of the regression: k for pca, 1280 for features
  std::vector<std::string> classes; // in index order
  std::vector<double> mean, scale;  // standardization: (x - mean) / scale, dim each
  std::vector<double> weights;      // classes x dim, row-major, on standardized inputs
  std::vector<double> bias;         // classes
  double l2 = 0;                    // the L2 strength chosen on the holdout
  std::string embedding_model;      // fingerprint of the prepared model the embeddings came from
  std::string pca_fingerprint;      // pca::fingerprint of the PCA the scores came from ("" for features)
  int pca_k = 0;
  pca::SavedModel pca;              // the projection (when on == "pca"), read with the head
  pca::Fit projection;              // pca as pca::project takes it (set by use_pca)

  // Sets pca and projection (and pca_fingerprint, pca_k) from a PCA model.
  void use_pca(const pca::SavedModel& model);

  int num_classes() const { return static_cast<int>(classes.size()); }
  // A fingerprint of the head's numbers (classes, weights, standardization, PCA): "<16 hex>".
  std::string fingerprint() const;
  // Class probabilities (rows x classes) of inputs already in the head's space (rows x dim).
  void probabilities(const double* x, std::int64_t rows, double* out) const;
  // Class probabilities (rows x classes) of embeddings (rows x 1280 floats): projects them on the
  // PCA first when on == "pca", with the same code that wrote pca_features/.
  void probabilities_of_embeddings(const float* embeddings, std::int64_t rows, std::vector<double>& out) const;
};

// One image's best classes, best first.
struct Ranked {
  std::vector<int> classes;
  std::vector<float> probabilities;
};
// The top k (at most every class) of one row of probabilities.
Ranked top_k(const double* probabilities, int num_classes, int k);

// Writes the head to file (classifier/model.parquet), atomically.
void write_head(const storage::Location& file, const Head& head);

// Reads TRAINED's classifier (TRAINED/classifier/model.parquet) and, for a PCA head, TRAINED/pca/
// model.parquet, whose fingerprint must be the one the head was trained on. Throws orchard::Error
// naming the file and the fix (run `orchard train TRAINED`) when either is missing or does not match.
Head read_head(const storage::Location& trained);

// Throws orchard::Error, saying what to do, when the prepared model's fingerprint differs from the
// one the head was trained on (its embeddings would not be the ones it learned).
void check_embedding_model(const Head& head, const std::string& model_fingerprint, const std::string& model_path);

}  // namespace orchard::classify
