#include "orchard/serve/request.hpp"

#include <cctype>

#include "orchard/error.hpp"

namespace orchard::serve {
namespace {
std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

std::string_view photo_bytes(std::string_view content_type, std::string_view body) {
  const std::string type = lower(content_type);
  if (type.rfind("multipart/form-data", 0) != 0) return body;
  auto at = type.find("boundary=");
  if (at == std::string::npos) throw Error::bad_input("multipart/form-data without a boundary");
  std::string boundary(content_type.substr(at + 9));
  if (auto semi = boundary.find(';'); semi != std::string::npos) boundary.resize(semi);
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  if (boundary.empty() || boundary.size() > 200) throw Error::bad_input("multipart/form-data with a bad boundary");
  const std::string delimiter = "--" + boundary;
  std::size_t pos = body.find(delimiter);
  while (pos != std::string_view::npos) {
    pos += delimiter.size();
    if (body.substr(pos, 2) == "--") break;  // the closing delimiter
    const auto headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string_view::npos) break;
    const std::string headers = lower(body.substr(pos, headers_end - pos));
    const auto content = headers_end + 4;
    const auto next = body.find("\r\n" + delimiter, content);
    if (next == std::string_view::npos) throw Error::bad_input("multipart/form-data part without its closing boundary");
    if (headers.find("content-disposition") != std::string::npos && headers.find("name=\"image\"") != std::string::npos)
      return body.substr(content, next - content);
    pos = next + 2;
  }
  throw Error::bad_input("multipart/form-data without a field named 'image' (send the photo as field 'image')");
}

std::optional<std::string> query_parameter(std::string_view target, std::string_view name) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
  return std::nullopt;
}

}  // namespace orchard::serve
