#pragma once
// What a classify request carries, taken apart without trusting it: the photo's bytes (raw body or
// multipart field "image") and ?top=K.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace orchard::serve {

// The photo's bytes: the body itself, or the multipart/form-data field "image" when content_type
// says multipart. Throws orchard::Error (kBadInput) naming what is wrong (no boundary, no field).
std::string_view photo_bytes(std::string_view content_type, std::string_view body);

// The value of query parameter `name` in a request target ("/v1/classify?top=3"), or nothing.
std::optional<std::string> query_parameter(std::string_view target, std::string_view name);

}  // namespace orchard::serve
