#pragma once
// `orchard serve`: the classifier over HTTP/1.1 (Boost.Beast). request -> decode (EXIF orientation,
// libjpeg DCT scaling) -> resize -> bounded queue -> batcher -> Embedder -> head -> JSON.
#include <cstdint>
#include <string>

namespace orchard::serve {

struct Options {
  std::string trained;             // TRAINED: an OUTPUT holding pca/ and classifier/
  std::string model;               // --model, as featurize resolves it
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0 = any free port
  std::string catalog;             // CSV or JSON: label -> what the app shows
  int workers = 0;                 // inference workers, one core each; 0 = one per core
  int max_batch = 8;               // photos per inference call at most
  int max_delay_ms = 2;            // how long a batch waits to fill once it has one photo
  int queue = 64;                  // photos waiting for a worker at most (then 503)
  std::int64_t max_body = 20 << 20;
  int read_timeout_s = 10;         // a whole request (headers and body) must arrive within this
  int max_connections = 256;       // open connections at most (then 503)
  int io_threads = 0;              // 0 = 2 per core, at least 4
};

// Loads the classifier and the model, binds, prints "orchard serve: listening on http://HOST:PORT"
// on stdout, and serves until SIGTERM or SIGINT, then drains (no new connections, requests in flight
// answered) and returns. Throws orchard::Error when it cannot start (classifier, model, port).
void run(const Options& options);

}  // namespace orchard::serve
