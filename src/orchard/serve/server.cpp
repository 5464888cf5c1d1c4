#include "orchard/serve/server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "orchard/classify/head.hpp"
#include "orchard/error.hpp"
#include "orchard/image/decode.hpp"
#include "orchard/image/resize.hpp"
#include "orchard/model/model.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/serve/batcher.hpp"
#include "orchard/serve/metrics.hpp"
#include "orchard/serve/page.hpp"
#include "orchard/serve/request.hpp"
#include "orchard/storage/storage.hpp"
#include "orchard/threads.hpp"

namespace orchard::serve {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// The service refuses photos larger than this before decoding them (a decompression bomb: a PNG, or a
// progressive JPEG, holds the full size in memory while decoding, whatever the DCT scale).
constexpr std::int64_t kMaxPhotoPixels = 50'000'000;
constexpr int kWriteTimeoutS = 30;
constexpr auto kDrainLimit = std::chrono::seconds(60);

// label -> what the app shows: a JSON object {label: {...}}, or a CSV whose first column is the label.
Json read_catalog(const std::string& file) {
  if (file.empty()) return Json::object();
  std::ifstream in(file);
  if (!in) throw Error(file + ": cannot read the catalog");
  std::stringstream text;
  text << in.rdbuf();
  if (file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0) {
    Json j = Json::parse(text.str(), nullptr, false);
    if (!j.is_object()) throw Error(file + ": the catalog must be a JSON object {label: {...}}");
    return j;
  }
  auto split = [](const std::string& line) {  // CSV fields, "quoted" ones may hold commas and ""
    std::vector<std::string> f(1);
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') f.back() += '"', ++i;
      else if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) f.emplace_back();
      else if (c != '\r') f.back() += c;
    }
    return f;
  };
  std::string line;
  std::getline(text, line);
  const auto header = split(line);
  if (header.size() < 2) throw Error(file + ": the catalog CSV needs a header: label,field,...");
  Json j = Json::object();
  while (std::getline(text, line)) {
    if (line.empty()) continue;
    const auto f = split(line);
    Json info = Json::object();
    for (std::size_t i = 1; i < header.size() && i < f.size(); ++i) info[header[i]] = f[i];
    j[f[0]] = info;
  }
  return j;
}

struct App {
  Options o;
  classify::Head head;
  std::string model_file;
  Json model_json, catalog;
  std::unique_ptr<model::Embedder> embedder;
  std::unique_ptr<Batcher> batcher;
  Metrics metrics;
  std::atomic<std::int64_t> in_flight{0}, connections{0};
  std::atomic<bool> draining{false};
};

Json error_json(const std::string& message) { return {{"error", message}}; }

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, App& app) : stream_(std::move(socket)), app_(app) { ++app_.connections; }
  ~Session() {
    if (busy_) --app_.in_flight;
    --app_.connections;
  }
  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

 private:
  // A whole request (headers and body) must arrive within --read-timeout: a slow client is cut.
  void read() {
    parser_.emplace();
    parser_->header_limit(64 * 1024);
    parser_->body_limit(static_cast<std::uint64_t>(app_.o.max_body));
    stream_.expires_after(std::chrono::seconds(app_.o.read_timeout_s));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return fail_read(ec);
    begin();
    const auto len = parser_->content_length();
    if (len && *len > static_cast<std::uint64_t>(app_.o.max_body)) return too_large();
    if (len) parser_->get().body().reserve(static_cast<std::size_t>(*len));  // one allocation, not a growth series
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {  // curl's way for bodies > 1 MiB
      continue_.emplace(http::status::continue_, 11);
      return http::async_write(stream_, *continue_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->close();
        self->read_body();
      });
    }
    read_body();
  }

  void read_body() {
    buffer_.reserve(64 * 1024);  // Beast reads what the buffer can take: 512 bytes at a time otherwise
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::body_limit) return too_large();
    if (ec) return fail_read(ec);
    read_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
    guarded([this] { route(); });
  }

  // Runs f; an exception (never expected: every client error is handled where it is found) becomes
  // one 503 instead of ending the I/O thread.
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "orchard serve: unexpected error answering a request: %s\n", e.what());
      res_extra_ = {{"Retry-After", "1"}};
      reply(http::status::service_unavailable, error_json("the service failed on this request; retry"), false);
    }
  }

  // A read that ended: the client left or was too slow (close), or sent something that is not HTTP (400).
  void fail_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::connection_reset || ec == net::error::eof || !stream_.socket().is_open())
      return close();
    if (ec == http::error::body_limit) return too_large();
    begin();
    reply(http::status::bad_request, error_json("malformed HTTP request: " + ec.message()), false);
  }

  void too_large() {
    reply(http::status::payload_too_large,
          error_json("request body larger than the limit of " + std::to_string(app_.o.max_body) +
                     " bytes (--max-body); send a smaller photo"),
          false);
  }

  void begin() {
    if (!busy_) ++app_.in_flight, busy_ = true;
    started_ = Clock::now();
  }

  void route() {
    const auto& req = parser_->get();
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    if (path == "/v1/classify") {
      if (req.method() != http::verb::post) return not_allowed("POST");
      return classify(target);
    }
    if (path == "/" || path == "/index.html" || path == "/healthz" || path == "/readyz" || path == "/metrics") {
      if (!get) return not_allowed("GET");
      if (path == "/healthz") return reply(http::status::ok, {{"status", "ok"}});
      if (path == "/readyz")
        return app_.draining ? reply(http::status::service_unavailable, {{"status", "draining"}})
                             : reply(http::status::ok, {{"status", "ready"}});
      if (path == "/metrics")
        return reply_text(http::status::ok, app_.metrics.render(app_.batcher->depth(), app_.in_flight.load()),
                          "text/plain; version=0.0.4");
      return reply_text(http::status::ok, std::string(kPageHtml), "text/html; charset=utf-8");
    }
    reply(http::status::not_found, error_json("no such endpoint: " + path + " (POST /v1/classify, GET /, /healthz, "
                                              "/readyz, /metrics)"));
  }

  void not_allowed(const char* allow) {
    res_extra_ = {{"Allow", allow}};
    reply(http::status::method_not_allowed, error_json(std::string("method not allowed; use ") + allow));
  }

  void classify(const std::string& target) {
    const auto& req = parser_->get();
    int top = 5;
    if (const auto t = query_parameter(target, "top")) {
      char* end = nullptr;
      const long v = std::strtol(t->c_str(), &end, 10);
      if (t->empty() || *end != '\0' || v < 1 || v > app_.head.num_classes())
        return reply(http::status::bad_request, error_json("top must be a whole number from 1 to " +
                                                           std::to_string(app_.head.num_classes()) + ", not '" +
                                                           t->substr(0, 40) + "'"));
      top = static_cast<int>(v);
    }
    const auto t0 = Clock::now();
    std::vector<float> photo(3 * model::kInputSize * model::kInputSize);
    try {
      const auto bytes = photo_bytes(std::string(req[http::field::content_type]), req.body());
      if (bytes.empty())
        throw Error::bad_input("empty body: send the photo's bytes (JPEG or PNG) as the body, or as multipart field 'image'");
      const auto rgb = image::decode_photo({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()},
                                           {true, model::kInputSize, kMaxPhotoPixels});
      image::to_chw_normalized(image::resize_bicubic(rgb, model::kInputSize, model::kInputSize), photo.data());
    } catch (const Error& e) {
      return reply(http::status::bad_request, error_json(std::string("not a usable photo: ") + e.what()));
    } catch (const std::bad_alloc&) {
      return reply(http::status::payload_too_large, error_json("the photo is too large to decode"));
    }
    decode_ms_ = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    top_ = top;
    auto self = shared_from_this();
    const bool queued = app_.batcher->submit(std::move(photo), [self](Outcome o) {
      net::post(self->stream_.get_executor(), [self, o = std::move(o)]() mutable {
        self->guarded([&] { self->answer(std::move(o)); });
      });
    });
    if (!queued) {
      res_extra_ = {{"Retry-After", "1"}};
      reply(http::status::service_unavailable, error_json("busy: the queue of photos is full; retry in a second"));
    }
  }

  void answer(Outcome o) {
    if (!o.error.empty()) {  // never the photo's fault (it decoded): the service is unwell
      res_extra_ = {{"Retry-After", "1"}};
      return reply(http::status::service_unavailable, error_json(o.error));
    }
    const auto r = classify::top_k(o.probabilities.data(), app_.head.num_classes(), top_);
    Json predictions = Json::array();
    for (std::size_t i = 0; i < r.classes.size(); ++i) {
      const auto& label = app_.head.classes[r.classes[i]];
      Json p = {{"label", label}, {"probability", r.probabilities[i]}};
      if (app_.catalog.contains(label)) p["info"] = app_.catalog[label];
      predictions.push_back(p);
    }
    const double total = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
    reply(http::status::ok, {{"predictions", predictions},
                             {"model", app_.model_json},
                             {"timings_ms", {{"read", read_ms_}, {"decode", decode_ms_}, {"queue", o.queue_ms}, {"infer", o.infer_ms},
                                             {"total", total}}},
                             {"batch", o.batch}});
  }

  void reply(http::status status, const Json& body, bool keep_alive = true) {
    // Labels and paths may hold bytes that are not UTF-8: replaced, never an exception.
    reply_text(status, body.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n", "application/json",
               keep_alive);
  }

  void reply_text(http::status status, std::string body, const char* type, bool keep_alive = true) {
    res_.emplace(status, 11);
    res_->set(http::field::server, "orchard");
    res_->set(http::field::content_type, type);
    res_->set(http::field::cache_control, "no-store");
    for (const auto& [k, v] : res_extra_) res_->set(k, v);
    res_extra_.clear();
    const bool head = parser_ && parser_->is_header_done() && parser_->get().method() == http::verb::head;
    keep_alive_ = keep_alive && parser_ && parser_->is_done() && parser_->get().keep_alive() && !app_.draining;
    res_->keep_alive(keep_alive_);
    res_->content_length(body.size());  // HEAD: the length a GET would get, and no body
    if (!head) res_->body() = std::move(body);
    stream_.expires_after(std::chrono::seconds(kWriteTimeoutS));
    http::async_write(stream_, *res_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_write(ec);
    });
  }

  void on_write(beast::error_code ec) {
    app_.metrics.request(static_cast<int>(res_->result_int()),
                         std::chrono::duration<double>(Clock::now() - started_).count());
    if (busy_) --app_.in_flight, busy_ = false;
    if (ec) return close();
    if (!keep_alive_) return linger();
    read();
  }

  // Ends a connection whose request may be unread (413, 503): stops sending, then discards what the
  // client still sends for at most a second, so that it reads the answer instead of a reset.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    discard_.resize(64 * 1024);
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
      if (ec || n == 0 || (self->discarded_ += n) > (64 << 20)) return self->close();
      self->linger();
    });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> res_;
  std::optional<http::response<http::empty_body>> continue_;
  std::vector<char> discard_;
  std::size_t discarded_ = 0;
  std::vector<std::pair<std::string, std::string>> res_extra_;
  App& app_;
  Clock::time_point started_ = Clock::now();
  double read_ms_ = 0, decode_ms_ = 0;
  int top_ = 5;
  bool busy_ = false, keep_alive_ = false;
};

// Accepts connections one after another on the acceptor's strand. Beyond --max-connections a new
// connection is closed at once; after an accept error (out of file descriptors) it waits 100 ms.
void accept(tcp::acceptor& acceptor, net::steady_timer& backoff, net::io_context& ioc, App& app) {
  acceptor.async_accept(net::make_strand(ioc), [&](beast::error_code ec, tcp::socket s) {
    if (!acceptor.is_open()) return;  // draining: no new connections
    if (ec) {
      backoff.expires_after(std::chrono::milliseconds(100));
      return backoff.async_wait([&](beast::error_code) { accept(acceptor, backoff, ioc, app); });
    }
    if (app.connections < app.o.max_connections) {
      std::make_shared<Session>(std::move(s), app)->start();
    } else {
      beast::error_code ignored;
      s.close(ignored);
    }
    accept(acceptor, backoff, ioc, app);
  });
}

// After SIGTERM: once no request is in flight (or after kDrainLimit), stop the I/O threads.
void wait_for_drain(net::steady_timer& timer, net::io_context& ioc, App& app, Clock::time_point since) {
  if (app.in_flight == 0 || Clock::now() - since > kDrainLimit) return ioc.stop();
  timer.expires_after(std::chrono::milliseconds(20));
  timer.async_wait([&timer, &ioc, &app, since](beast::error_code) { wait_for_drain(timer, ioc, app, since); });
}

}  // namespace

void run(const Options& options) {
  App app;
  app.o = options;
  app.head = classify::read_head(storage::open(options.trained));
  app.model_file = model::resolve(options.model);
  const std::string fingerprint = model::model_fingerprint(app.model_file);
  classify::check_embedding_model(app.head, fingerprint, app.model_file);
  app.catalog = read_catalog(options.catalog);
  const int workers = resolve_threads(options.workers);
  // One engine stream of one core per worker, compiled for one photo per call (measured fastest on
  // this CPU, docs/benchmarks.md): a batch is the unit of queueing and of the head.
  app.embedder = model::load_embedder(app.model_file, {workers, 1, 1});
  app.model_json = {{"embedding", fingerprint}, {"classifier", app.head.fingerprint()},
                    {"classes", app.head.num_classes()}, {"on", app.head.on}};
  app.batcher = std::make_unique<Batcher>(*app.embedder, app.head, workers, options.max_batch,
                                          std::chrono::milliseconds(options.max_delay_ms), options.queue);
  app.batcher->on_batch = [&app](int n) { app.metrics.batch(n); };

  const int io_threads = options.io_threads > 0 ? options.io_threads : std::max(4, 2 * resolve_threads(0));
  net::io_context ioc(io_threads);
  tcp::acceptor acceptor(net::make_strand(ioc));  // accepting and closing (SIGTERM) on one strand
  net::steady_timer accept_backoff(acceptor.get_executor());
  try {
    const tcp::endpoint at(net::ip::make_address(options.host), static_cast<unsigned short>(options.port));
    acceptor.open(at.protocol());
    acceptor.set_option(net::socket_base::reuse_address(true));
    acceptor.bind(at);
    acceptor.listen(net::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    throw Error("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " + e.what() +
                " (choose another --port, or --port 0 for any free one)");
  }
  accept(acceptor, accept_backoff, ioc, app);
  net::steady_timer drain_timer(ioc);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code ec, int sig) {
    if (ec) return;
    std::fprintf(stderr, "orchard serve: signal %d: draining (no new connections, finishing %lld in flight)\n", sig,
                 static_cast<long long>(app.in_flight.load()));
    app.draining = true;
    net::post(acceptor.get_executor(), [&] {
      beast::error_code ignored;
      acceptor.close(ignored);
      accept_backoff.cancel();
    });
    wait_for_drain(drain_timer, ioc, app, Clock::now());
  });
  const auto bound = acceptor.local_endpoint();
  std::printf("orchard serve: listening on http://%s:%u\n", bound.address().to_string().c_str(), bound.port());
  std::fflush(stdout);
  std::fprintf(stderr, "orchard serve: %d classes, %d inference workers, batches of up to %d, queue %d; model %s\n",
               app.head.num_classes(), workers, options.max_batch, options.queue, app.model_file.c_str());
  auto run_io = [&ioc] {
    while (true) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {  // a handler's: logged, and this thread serves on
        std::fprintf(stderr, "orchard serve: unexpected error in an I/O handler: %s\n", e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < io_threads; ++i) threads.emplace_back(run_io);
  run_io();
  for (auto& t : threads) t.join();
  app.batcher->stop();
  std::fprintf(stderr, "orchard serve: drained, exiting\n");
}

}  // namespace orchard::serve
