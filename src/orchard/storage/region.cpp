#include "orchard/storage/region.hpp"

#include <arrow/filesystem/s3fs.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>

namespace orchard::storage::region {
namespace {

struct Url {
  std::string scheme, host, port, path;  // path without the leading '/'
};

std::optional<Url> parse_url(const std::string& url) {
  const auto sep = url.find("://");
  if (sep == std::string::npos) return std::nullopt;
  Url u;
  u.scheme = url.substr(0, sep);
  std::string rest = url.substr(sep + 3);
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  u.path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  while (!u.path.empty() && u.path.back() == '/') u.path.pop_back();
  const auto colon = authority.rfind(':');
  const bool has_port = colon != std::string::npos && authority.find(']', colon) == std::string::npos;
  u.host = has_port ? authority.substr(0, colon) : authority;
  u.port = has_port ? authority.substr(colon + 1) : (u.scheme == "https" ? "443" : "80");
  if (u.host.size() > 2 && u.host.front() == '[' && u.host.back() == ']') u.host = u.host.substr(1, u.host.size() - 2);
  if (u.host.empty()) return std::nullopt;
  return u;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
};

// A socket connected to host:port within timeout_ms, or -1.
int connect_to(const Url& u, int timeout_ms) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(u.host.c_str(), u.port.c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    bool ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!ok && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      ok = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    if (!ok) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

// One plain-HTTP/1.1 request (Connection: close); nothing when the server cannot be reached or
// does not answer HTTP within timeout_ms per step.
std::optional<Response> http(const Url& u, const std::string& method, const std::string& path,
                             const std::map<std::string, std::string>& headers, int timeout_ms) {
  if (u.scheme != "http") return std::nullopt;
  const int fd = connect_to(u, timeout_ms);
  if (fd < 0) return std::nullopt;
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const std::string host = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;  // IPv6
  std::string req = method + " /" + path + " HTTP/1.1\r\nHost: " + host + ":" + u.port +
                    "\r\nConnection: close\r\nContent-Length: 0\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  std::string in;
  bool sent = send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  char buf[4096];
  for (ssize_t n; sent && in.size() < (1 << 16) && (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
    in.append(buf, static_cast<std::size_t>(n));
    if (method == "HEAD" && in.find("\r\n\r\n") != std::string::npos) break;
  }
  close(fd);
  const auto end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.", 0) != 0 || end == std::string::npos || in.size() < 12) return std::nullopt;
  Response r;
  r.status = std::atoi(in.c_str() + 9);
  for (std::size_t pos = in.find("\r\n") + 2; pos < end;) {
    const auto eol = in.find("\r\n", pos);
    const std::string line = in.substr(pos, eol - pos);
    pos = eol + 2;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon), value = line.substr(colon + 1);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t") + 1);
    r.headers[name] = value;
  }
  r.body = in.substr(end + 4);
  return r;
}

// A plausible region name (letters, digits, '-'), as a header or the metadata service gives it.
std::optional<std::string> checked(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.empty() || s.size() > 64 ||
      !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; }))
    return std::nullopt;
  return s;
}

}  // namespace

std::optional<std::string> from_store(const std::string& bucket, const std::string& endpoint) {
  if (endpoint.empty()) {  // AWS itself: Arrow asks s3.amazonaws.com (HeadBucket, any answer's header)
    auto r = arrow::fs::ResolveS3BucketRegion(bucket);
    return r.ok() ? checked(*r) : std::nullopt;
  }
  const auto u = parse_url(endpoint);
  if (!u) return std::nullopt;
  const auto r = http(*u, "HEAD", u->path.empty() ? bucket : u->path + "/" + bucket, {}, 3000);
  if (!r) return std::nullopt;
  // A store that answers without the header (SeaweedFS, MinIO) has no location constraint: S3's
  // default region, what its GetBucketLocation's empty answer means and what the AWS CLI and boto3
  // sign with for a custom endpoint.
  const auto h = r->headers.find("x-amz-bucket-region");
  if (h != r->headers.end()) return checked(h->second);
  // Only an answer from the store itself (not a 5xx of a proxy or a restarting server) says so.
  return r->status >= 200 && r->status < 500 ? std::optional<std::string>("us-east-1") : std::nullopt;
}

std::optional<std::string> from_instance_metadata() {
  const char* off = std::getenv("AWS_EC2_METADATA_DISABLED");
  if (off && std::string(off) == "true") return std::nullopt;
  const char* ep = std::getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  const auto u = parse_url(ep && *ep ? ep : "http://169.254.169.254");
  if (!u) return std::nullopt;
  std::map<std::string, std::string> headers;
  // IMDSv2: a session token first; a service that only speaks v1 answers the GET without one.
  if (auto t = http(*u, "PUT", "latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds", "60"}}, 1000)) {
    if (t->status == 200) headers["X-aws-ec2-metadata-token"] = t->body;
  } else {
    return std::nullopt;  // nothing answers: not on EC2
  }
  const auto r = http(*u, "GET", "latest/meta-data/placement/region", headers, 1000);
  return r && r->status == 200 ? checked(r->body) : std::nullopt;
}

}  // namespace orchard::storage::region
