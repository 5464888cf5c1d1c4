// Decoding JPEG (libjpeg API of libjpeg-turbo) and PNG (libpng) to 8-bit RGB with the same bytes
// as Pillow's Image.open(...).convert('RGB').
//
// Both libraries report errors through setjmp/longjmp. The functions that call into them
// (jpeg_* / png_* "stages" below) therefore hold no C++ objects with destructors between the
// setjmp and the library calls: they return a status, and the C++ code around them throws.
#include "orchard/image/decode.hpp"

#include <array>
#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <utility>

// jpeglib.h needs FILE and size_t declared before it.
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "orchard/error.hpp"

namespace orchard::image {
namespace {

std::string size_text(std::int64_t w, std::int64_t h) {
  return std::to_string(w) + "x" + std::to_string(h);
}

// The service's own limit (PhotoOptions::max_pixels), checked on the header before decoding.
void check_photo_limit(std::int64_t w, std::int64_t h, std::int64_t max_pixels, const char* format) {
  if (w > 0 && h > 0 && w * h > max_pixels)
    throw Error::bad_input(std::string(format) + " image is " + size_text(w, h) + " = " + std::to_string(w * h) +
                           " pixels, above the service's limit of " + std::to_string(max_pixels) +
                           " pixels (a decompression bomb?); send a smaller photo");
}

// Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS (DecompressionBombError); so do we,
// before any pixel buffer is allocated.
void check_pixel_limit(std::int64_t w, std::int64_t h, const char* format) {
  if (w <= 0 || h <= 0) {
    throw Error::bad_input(std::string(format) + " header gives an empty image size " + size_text(w, h) +
                "; the file is damaged, re-export it");
  }
  if (w * h > kMaxPixels) {
    throw Error::bad_input(std::string(format) + " image is " + size_text(w, h) + " = " +
                std::to_string(w * h) + " pixels, above the limit of " +
                std::to_string(kMaxPixels) +
                " pixels (Pillow's decompression-bomb limit); downscale it before featurizing");
  }
  // JPEG cannot exceed 65535 a side; a PNG that does (say 178,000,000 x 1) would need gigabytes of
  // resize buffers per worker. Orchard refuses it (Pillow would try).
  if (w > kMaxSide || h > kMaxSide) {
    throw Error::bad_input(std::string(format) + " image is " + size_text(w, h) + ", a side above " +
                std::to_string(kMaxSide) + " pixels; crop or downscale it before featurizing");
  }
}

// ---------------------------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------------------------

struct JpegErrorMgr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (corrupt-data notices such as extraneous bytes before a marker) are ignored, as Pillow
// ignores them; libjpeg still counts them in num_warnings.
void jpeg_on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) cinfo->err->num_warnings++;
}

// A suspending source over the whole file, like Pillow's: when libjpeg asks for bytes beyond the
// end it suspends instead of inventing an EOI marker. Since all bytes are already here, a
// suspension means the file is truncated, which Pillow reports as "image file is truncated".
void src_noop(j_decompress_ptr) {}
boolean src_fill(j_decompress_ptr) { return FALSE; }
void src_skip(j_decompress_ptr cinfo, long num_bytes) {
  if (num_bytes <= 0) return;
  jpeg_source_mgr* src = cinfo->src;
  if (static_cast<std::size_t>(num_bytes) > src->bytes_in_buffer) {
    src->next_input_byte += src->bytes_in_buffer;
    src->bytes_in_buffer = 0;  // the next read suspends: truncated
  } else {
    src->next_input_byte += num_bytes;
    src->bytes_in_buffer -= static_cast<std::size_t>(num_bytes);
  }
}

enum class Stage { kOk, kSuspended, kFailed };

struct JpegState {
  jpeg_decompress_struct cinfo;
  JpegErrorMgr err;
  jpeg_source_mgr src;
  bool created;
};

// save_app1: keep the APP1 segments (EXIF) in cinfo.marker_list, for decode_photo.
Stage jpeg_stage_header(JpegState* s, const std::uint8_t* data, std::size_t size, bool save_app1) {
  if (setjmp(s->err.jump)) return Stage::kFailed;
  s->cinfo.err = jpeg_std_error(&s->err.pub);
  s->err.pub.error_exit = jpeg_on_error;
  s->err.pub.emit_message = jpeg_on_message;
  s->err.message[0] = '\0';
  jpeg_create_decompress(&s->cinfo);
  s->created = true;
  if (save_app1) jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, 0xFFFF);
  s->src.init_source = src_noop;
  s->src.fill_input_buffer = src_fill;
  s->src.skip_input_data = src_skip;
  s->src.resync_to_restart = jpeg_resync_to_restart;
  s->src.term_source = src_noop;
  s->src.next_input_byte = data;
  s->src.bytes_in_buffer = size;
  s->cinfo.src = &s->src;
  int ok;
  do {  // as Pillow: skip tables-only datastreams until an image header is found
    ok = jpeg_read_header(&s->cinfo, FALSE);
  } while (ok == JPEG_HEADER_TABLES_ONLY);
  return ok == JPEG_SUSPENDED ? Stage::kSuspended : Stage::kOk;
}

// For decode_photo: picks the DCT scale n/8 (n = 1..8), the smallest whose output is at least
// min_side (> 0) on both sides, and leaves it in cinfo.scale_num / scale_denom. No scaling (the 1/1
// that jpeg_read_header set) when n would be 8 or the image is already below min_side on a side.
Stage jpeg_stage_scale(JpegState* s, int min_side) {
  if (setjmp(s->err.jump)) return Stage::kFailed;
  const auto side = static_cast<JDIMENSION>(min_side);
  if (s->cinfo.image_width < side || s->cinfo.image_height < side) return Stage::kOk;
  for (unsigned int num = 1; num < 8; ++num) {
    s->cinfo.scale_num = num;
    s->cinfo.scale_denom = 8;
    jpeg_calc_output_dimensions(&s->cinfo);  // output = ceil(image * num / 8)
    if (s->cinfo.output_width >= side && s->cinfo.output_height >= side) return Stage::kOk;
  }
  s->cinfo.scale_num = 1;
  s->cinfo.scale_denom = 1;
  return Stage::kOk;
}

Stage jpeg_stage_start(JpegState* s) {
  if (setjmp(s->err.jump)) return Stage::kFailed;
  return jpeg_start_decompress(&s->cinfo) ? Stage::kOk : Stage::kSuspended;
}

// Reads all scanlines. `row` receives one decoded line (output_width * output_components bytes);
// `convert(row, y)` writes it into the RGB result; it must not throw.
template <typename Convert>
Stage jpeg_stage_rows(JpegState* s, JSAMPLE* row, Convert& convert) {
  if (setjmp(s->err.jump)) return Stage::kFailed;
  while (s->cinfo.output_scanline < s->cinfo.output_height) {
    JSAMPROW rows[1] = {row};
    const JDIMENSION y = s->cinfo.output_scanline;
    if (jpeg_read_scanlines(&s->cinfo, rows, 1) != 1) return Stage::kSuspended;
    convert(row, y);
  }
  // Pillow ignores a suspension here (e.g. a missing EOI marker) once every line is read.
  jpeg_finish_decompress(&s->cinfo);
  return Stage::kOk;
}

// EXIF Orientation (tag 0x0112 of IFD0) in a TIFF block (an APP1 segment after "Exif\0\0"): 1-8,
// or 0 when the block is malformed or has no usable tag. Every read is bounds-checked against `n`.
// As in Pillow, IFD0 entries wholly inside the block count even if the entry list is cut short.
int tiff_orientation(const std::uint8_t* t, std::size_t n) {
  if (n < 8) return 0;
  bool little;
  if (t[0] == 'I' && t[1] == 'I') {
    little = true;
  } else if (t[0] == 'M' && t[1] == 'M') {
    little = false;
  } else {
    return 0;
  }
  auto u16 = [&](std::size_t p) -> std::uint32_t {  // callers ensure p + 2 <= n
    return little ? (std::uint32_t{t[p + 1]} << 8) | t[p] : (std::uint32_t{t[p]} << 8) | t[p + 1];
  };
  auto u32 = [&](std::size_t p) -> std::uint32_t {  // callers ensure p + 4 <= n
    return little ? (u16(p + 2) << 16) | u16(p) : (u16(p) << 16) | u16(p + 2);
  };
  if (u16(2) != 42) return 0;
  const std::uint64_t ifd = u32(4);
  if (ifd < 8 || ifd + 2 > n) return 0;
  const std::uint64_t count = u16(static_cast<std::size_t>(ifd));
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint64_t e = ifd + 2 + 12 * i;
    if (e + 12 > n) return 0;  // the list is cut short before the tag
    const auto p = static_cast<std::size_t>(e);
    if (u16(p) != 0x0112) continue;
    // SHORT (type 3), one value, stored in the first two bytes of the value field.
    if (u16(p + 2) != 3 || u32(p + 4) != 1) return 0;
    const std::uint32_t v = u16(p + 8);
    return v >= 1 && v <= 8 ? static_cast<int>(v) : 0;
  }
  return 0;
}

// Orientation from the first APP1 "Exif\0\0" segment libjpeg saved (IFD0 is in it); 0 when there
// is none or it is malformed.
int exif_orientation(jpeg_saved_marker_ptr marker) {
  for (; marker != nullptr; marker = marker->next) {
    if (marker->marker != JPEG_APP0 + 1 || marker->data == nullptr) continue;
    if (marker->data_length < 6) continue;
    if (std::memcmp(marker->data, "Exif\0\0", 6) != 0) continue;
    return tiff_orientation(marker->data + 6, marker->data_length - 6);
  }
  return 0;
}

// Applies EXIF orientation 2-8 as PIL.ImageOps.exif_transpose does (2 mirror left-right, 3 rotate
// 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
// counter-clockwise); any other value returns the image as it is. Output pixel (x, y) is the source
// bytes at origin + x * step_x + y * step_y.
RgbImage apply_orientation(RgbImage in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const std::ptrdiff_t w = in.width, h = in.height, px = 3, row = w * 3;
  std::ptrdiff_t origin = 0, step_x = 0, step_y = 0;
  switch (orientation) {
    case 2: origin = (w - 1) * px; step_x = -px; step_y = row; break;
    case 3: origin = (h - 1) * row + (w - 1) * px; step_x = -px; step_y = -row; break;
    case 4: origin = (h - 1) * row; step_x = px; step_y = -row; break;
    case 5: origin = 0; step_x = row; step_y = px; break;
    case 6: origin = (h - 1) * row; step_x = -row; step_y = px; break;
    case 7: origin = (h - 1) * row + (w - 1) * px; step_x = -row; step_y = -px; break;
    default: origin = (w - 1) * px; step_x = row; step_y = -px; break;  // 8
  }
  RgbImage out;
  const bool swap = orientation >= 5;
  out.width = swap ? in.height : in.width;
  out.height = swap ? in.width : in.height;
  out.pixels.resize(in.pixels.size());
  const std::uint8_t* src = in.pixels.data();
  std::uint8_t* dst = out.pixels.data();
  for (std::ptrdiff_t y = 0; y < out.height; ++y) {
    std::ptrdiff_t at = origin + y * step_y;
    for (std::ptrdiff_t x = 0; x < out.width; ++x, at += step_x, dst += 3) {
      std::memcpy(dst, src + at, 3);
    }
  }
  return out;
}

class JpegDecoder {
 public:
  JpegDecoder() = default;
  ~JpegDecoder() {
    if (state_.created) jpeg_destroy_decompress(&state_.cinfo);
  }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // photo: decode_photo's options (DCT scaling, EXIF orientation read into orientation()); null for
  // decode_to_rgb, which touches neither.
  RgbImage decode(std::span<const std::uint8_t> bytes, const PhotoOptions* photo = nullptr) {
    const bool want_exif = photo != nullptr && photo->apply_exif_orientation;
    check(jpeg_stage_header(&state_, bytes.data(), bytes.size(), want_exif),
          "reading the JPEG header");
    jpeg_decompress_struct& cinfo = state_.cinfo;

    // Pillow picks the mode from the component count: 1 -> L, 3 -> RGB, 4 -> CMYK, and asks
    // libjpeg for that colour space (trusting libjpeg's guess of the stored one).
    const int components = cinfo.num_components;
    if (cinfo.data_precision != 8) {
      throw Error::bad_input("JPEG has " + std::to_string(cinfo.data_precision) +
                  "-bit samples; only 8-bit JPEG is supported, re-export it as 8-bit");
    }
    if (components == 1) {
      cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (components == 3) {
      cinfo.out_color_space = JCS_RGB;
    } else if (components == 4) {
      cinfo.out_color_space = JCS_CMYK;
    } else {
      throw Error::bad_input("JPEG has " + std::to_string(components) +
                  " colour components; only 1 (gray), 3 (colour) or 4 (CMYK) are supported");
    }
    check_pixel_limit(cinfo.image_width, cinfo.image_height, "JPEG");
    if (photo != nullptr) check_photo_limit(cinfo.image_width, cinfo.image_height, photo->max_pixels, "JPEG");
    if (photo != nullptr && photo->min_side > 0) {
      check(jpeg_stage_scale(&state_, photo->min_side), "choosing the JPEG scale");
    }
    if (want_exif) orientation_ = exif_orientation(cinfo.marker_list);

    check(jpeg_stage_start(&state_), "starting JPEG decompression");
    const int w = static_cast<int>(cinfo.output_width);
    const int h = static_cast<int>(cinfo.output_height);
    if (cinfo.output_components != components) {
      throw Error::bad_input("libjpeg returned " + std::to_string(cinfo.output_components) +
                  " components for a " + std::to_string(components) +
                  "-component JPEG; the file is unusual, re-export it as RGB JPEG");
    }

    RgbImage out;
    out.width = w;
    out.height = h;
    out.pixels.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    std::vector<JSAMPLE> line(static_cast<std::size_t>(w) * static_cast<std::size_t>(components));
    std::uint8_t* const base = out.pixels.data();
    const std::size_t stride = static_cast<std::size_t>(w) * 3;

    if (components == 3) {
      auto convert = [&](const JSAMPLE* row, JDIMENSION y) {
        std::memcpy(base + y * stride, row, stride);
      };
      check(jpeg_stage_rows(&state_, line.data(), convert), "decoding the JPEG data");
    } else if (components == 1) {
      auto convert = [&](const JSAMPLE* row, JDIMENSION y) {
        std::uint8_t* o = base + y * stride;
        for (int x = 0; x < w; ++x, o += 3) o[0] = o[1] = o[2] = row[x];
      };
      check(jpeg_stage_rows(&state_, line.data(), convert), "decoding the JPEG data");
    } else {
      // Pillow reads CMYK JPEGs as Adobe-inverted ("CMYK;I": each stored byte b becomes 255 - b)
      // and convert('RGB') then computes, per channel, nk - nk * c / 255 (rounded with Pillow's
      // MULDIV255) where nk = 255 - k. With the stored bytes that is
      // K - (255 - C) * K / 255 for C in the stored C, M, Y and K the stored K.
      auto convert = [&](const JSAMPLE* row, JDIMENSION y) {
        std::uint8_t* o = base + y * stride;
        for (int x = 0; x < w; ++x, row += 4, o += 3) {
          const int nk = row[3];
          for (int c = 0; c < 3; ++c) {
            const int ink = 255 - row[c];
            const int t = ink * nk + 128;
            const int v = nk - (((t >> 8) + t) >> 8);
            o[c] = static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
          }
        }
      };
      check(jpeg_stage_rows(&state_, line.data(), convert), "decoding the JPEG data");
    }
    return out;
  }

  // EXIF orientation found by decode (1-8), 0 if none or not asked for.
  int orientation() const { return orientation_; }

 private:
  void check(Stage stage, const char* what) {
    if (stage == Stage::kSuspended) {
      throw Error::bad_input(
          "JPEG is truncated: the file ends before the image data is complete (Pillow: "
          "\"image file is truncated\"); re-download or re-export the file");
    }
    if (stage == Stage::kFailed) {
      if (state_.err.pub.msg_code == JERR_OUT_OF_MEMORY) throw std::bad_alloc();  // not the image's fault
      throw Error::bad_input(std::string("corrupt JPEG (libjpeg error while ") + what +
                  "): " + state_.err.message + "; re-export the file");
    }
  }

  JpegState state_{};  // zero-initialised: created == false
  int orientation_ = 0;
};

// ---------------------------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------------------------

struct PngReader {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  std::size_t pos = 0;
  bool truncated = false;
  char message[256] = {0};
};

PngReader* png_reader(png_structp png) { return static_cast<PngReader*>(png_get_error_ptr(png)); }

void png_on_error(png_structp png, png_const_charp msg) {
  PngReader* r = png_reader(png);
  std::snprintf(r->message, sizeof(r->message), "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // Pillow shows none of libpng's warnings

void png_on_read(png_structp png, png_bytep out, png_size_t length) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (length > r->size - r->pos) {
    r->truncated = true;
    png_error(png, "file ends before the image data is complete");
  }
  std::memcpy(out, r->data + r->pos, length);
  r->pos += length;
}

struct PngInfo {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  std::size_t rowbytes = 0;
  int passes = 1;
  std::uint8_t palette[256 * 3] = {0};  // missing entries are black, as in Pillow
};

std::uint32_t crc32(const std::uint8_t* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         p[3];
}

// Pillow verifies the checksum of every chunk before the first IDAT (and refuses the file on a
// mismatch) but never those of the image data or later chunks; this does the same before libpng
// (which is then told to use all chunks without checking). Incomplete chunks are left to libpng,
// which reports the file as truncated.
void png_check_header_crcs(std::span<const std::uint8_t> b) {
  std::size_t pos = 8;
  while (pos + 8 <= b.size()) {
    const std::uint32_t len = be32(&b[pos]);
    const std::uint8_t* type = &b[pos + 4];
    if (std::memcmp(type, "IDAT", 4) == 0) return;
    if (len > b.size() || pos + 12 + len > b.size()) return;
    if (crc32(type, 4 + std::size_t{len}) != be32(type + 4 + len)) {
      std::string name;
      for (int i = 0; i < 4; ++i) name += (type[i] >= 32 && type[i] < 127) ? char(type[i]) : '?';
      throw Error::bad_input("corrupt PNG: bad checksum in the " + name +
                  " chunk (Pillow refuses it too); re-export the file");
    }
    pos += 12 + len;
  }
}

Stage png_stage_header(png_structp png, png_infop info, PngInfo* out) {
  if (setjmp(png_jmpbuf(png))) return Stage::kFailed;
  // Sizes are checked against Pillow's pixel limit by the caller; lift libpng's own
  // 1,000,000-pixel-per-side default so that limit is the one that applies.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  // Checksums before the image data were verified by png_check_header_crcs; Pillow ignores the
  // others.
  png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
  png_read_info(png, info);
  out->width = png_get_image_width(png, info);
  out->height = png_get_image_height(png, info);
  out->bit_depth = png_get_bit_depth(png, info);
  out->color_type = png_get_color_type(png, info);
  out->interlace = png_get_interlace_type(png, info);
  if (out->color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp pal = nullptr;
    int n = 0;
    if (png_get_PLTE(png, info, &pal, &n) & PNG_INFO_PLTE) {
      for (int i = 0; i < n && i < 256; ++i) {
        out->palette[i * 3 + 0] = pal[i].red;
        out->palette[i * 3 + 1] = pal[i].green;
        out->palette[i * 3 + 2] = pal[i].blue;
      }
    }
  }
  return Stage::kOk;
}

// Only unpacking of 1/2/4-bit samples to one byte each (values unscaled); everything else is
// converted by hand below, to follow Pillow rather than libpng's transformations.
Stage png_stage_setup(png_structp png, png_infop info, PngInfo* out) {
  if (setjmp(png_jmpbuf(png))) return Stage::kFailed;
  if (out->bit_depth < 8) png_set_packing(png);
  out->passes = out->interlace != PNG_INTERLACE_NONE ? png_set_interlace_handling(png) : 1;
  png_read_update_info(png, info);
  out->rowbytes = png_get_rowbytes(png, info);
  return Stage::kOk;
}

Stage png_stage_read_image(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return Stage::kFailed;
  png_read_image(png, rows);
  return Stage::kOk;
}

Stage png_stage_read_row(png_structp png, png_bytep row) {
  if (setjmp(png_jmpbuf(png))) return Stage::kFailed;
  png_read_row(png, row, nullptr);
  return Stage::kOk;
}

// Converts one unpacked libpng row to RGB as Pillow's mode and convert('RGB') would.
void png_row_to_rgb(const PngInfo& p, const std::uint8_t* in, std::uint8_t* o, int w) {
  const int ct = p.color_type;
  const int bd = p.bit_depth;
  if (ct == PNG_COLOR_TYPE_GRAY) {
    if (bd == 16) {
      // Pillow opens this as mode "I;16"; convert('RGB') clips values above 255 to 255.
      for (int x = 0; x < w; ++x, in += 2, o += 3) {
        const std::uint8_t v = in[0] == 0 ? in[1] : 255;
        o[0] = o[1] = o[2] = v;
      }
    } else {
      // 1-bit: mode "1" (0 or 255); 2/4-bit: Pillow's L;2 / L;4 scale by 85 / 17.
      const int scale = bd == 1 ? 255 : bd == 2 ? 85 : bd == 4 ? 17 : 1;
      for (int x = 0; x < w; ++x, o += 3) {
        const auto v = static_cast<std::uint8_t>(in[x] * scale);
        o[0] = o[1] = o[2] = v;
      }
    }
  } else if (ct == PNG_COLOR_TYPE_GRAY_ALPHA) {
    const int step = bd == 16 ? 4 : 2;  // 16-bit: Pillow keeps the high byte of gray
    for (int x = 0; x < w; ++x, in += step, o += 3) o[0] = o[1] = o[2] = in[0];
  } else if (ct == PNG_COLOR_TYPE_PALETTE) {
    for (int x = 0; x < w; ++x, o += 3) std::memcpy(o, p.palette + in[x] * 3, 3);
  } else if (ct == PNG_COLOR_TYPE_RGB || ct == PNG_COLOR_TYPE_RGB_ALPHA) {
    const int channels = ct == PNG_COLOR_TYPE_RGB ? 3 : 4;  // alpha is dropped
    if (bd == 8 && channels == 3) {
      std::memcpy(o, in, static_cast<std::size_t>(w) * 3);
    } else {
      const int bytes = bd == 16 ? 2 : 1;  // 16-bit: the high (first) byte
      const int step = channels * bytes;
      for (int x = 0; x < w; ++x, in += step, o += 3) {
        o[0] = in[0];
        o[1] = in[bytes];
        o[2] = in[2 * bytes];
      }
    }
  }
}

class PngDecoder {
 public:
  PngDecoder() {
    png_ = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader_, png_on_error, png_on_warning);
    if (png_) info_ = png_create_info_struct(png_);
    if (!png_ || !info_) {
      png_destroy_read_struct(&png_, nullptr, nullptr);
      throw std::bad_alloc();  // the machine's problem, not the image's: it fails the shard
    }
  }
  ~PngDecoder() { png_destroy_read_struct(&png_, info_ ? &info_ : nullptr, nullptr); }
  PngDecoder(const PngDecoder&) = delete;
  PngDecoder& operator=(const PngDecoder&) = delete;

  RgbImage decode(std::span<const std::uint8_t> bytes) {
    png_check_header_crcs(bytes);
    reader_.data = bytes.data();
    reader_.size = bytes.size();
    png_set_read_fn(png_, &reader_, png_on_read);

    check(png_stage_header(png_, info_, &p_));
    const int ct = p_.color_type;
    if (ct != PNG_COLOR_TYPE_GRAY && ct != PNG_COLOR_TYPE_GRAY_ALPHA &&
        ct != PNG_COLOR_TYPE_PALETTE && ct != PNG_COLOR_TYPE_RGB &&
        ct != PNG_COLOR_TYPE_RGB_ALPHA) {
      throw Error::bad_input("PNG has unsupported colour type " + std::to_string(ct) + "; re-export it");
    }
    check_pixel_limit(p_.width, p_.height, "PNG");
    check(png_stage_setup(png_, info_, &p_));

    const int w = static_cast<int>(p_.width);
    const int h = static_cast<int>(p_.height);
    RgbImage out;
    out.width = w;
    out.height = h;
    const std::size_t stride = static_cast<std::size_t>(w) * 3;
    out.pixels.resize(stride * static_cast<std::size_t>(h));

    if (p_.passes == 1) {
      std::vector<std::uint8_t> row(p_.rowbytes);
      for (int y = 0; y < h; ++y) {
        check(png_stage_read_row(png_, row.data()));
        png_row_to_rgb(p_, row.data(), out.pixels.data() + stride * y, w);
      }
    } else {
      // Interlaced: libpng assembles the passes into the whole (unpacked) image.
      std::vector<std::uint8_t> raw(p_.rowbytes * static_cast<std::size_t>(h));
      std::vector<png_bytep> rows(static_cast<std::size_t>(h));
      for (int y = 0; y < h; ++y) rows[y] = raw.data() + p_.rowbytes * y;
      check(png_stage_read_image(png_, rows.data()));
      for (int y = 0; y < h; ++y) {
        png_row_to_rgb(p_, rows[y], out.pixels.data() + stride * y, w);
      }
    }
    // The chunks after the image data are not read: Pillow tolerates a missing or damaged end.
    return out;
  }

 private:
  void check(Stage stage) {
    if (stage == Stage::kOk) return;
    if (reader_.truncated) {
      throw Error::bad_input(
          "PNG is truncated: the file ends before the image data is complete; re-download or "
          "re-export the file");
    }
    if (std::strstr(reader_.message, "Out of memory") || std::strstr(reader_.message, "out of memory"))
      throw std::bad_alloc();  // libpng's allocation failed: not the image's fault
    throw Error::bad_input(std::string("corrupt PNG (libpng: ") + reader_.message + "); re-export the file");
  }

  PngReader reader_;
  PngInfo p_;
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
};

std::string hex_prefix(std::span<const std::uint8_t> bytes) {
  static const char* digits = "0123456789ABCDEF";
  std::string s;
  for (std::size_t i = 0; i < bytes.size() && i < 8; ++i) {
    if (i) s += ' ';
    s += digits[bytes[i] >> 4];
    s += digits[bytes[i] & 15];
  }
  return s;
}

}  // namespace

RgbImage decode_to_rgb(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) throw Error::bad_input("empty file (0 bytes); re-download or remove it");
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    JpegDecoder decoder;
    return decoder.decode(bytes);
  }
  if (bytes.size() >= 4 && bytes[0] == 0x89 && bytes[1] == 0x50 && bytes[2] == 0x4E &&
      bytes[3] == 0x47) {
    PngDecoder decoder;
    return decoder.decode(bytes);
  }
  throw Error::bad_input("not a JPEG or PNG file (starts with " + hex_prefix(bytes) +
              "); only JPEG and PNG images are supported, convert it or remove it");
}

RgbImage decode_photo(std::span<const std::uint8_t> bytes, const PhotoOptions& options) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 24 && std::equal(kPng, kPng + 8, bytes.begin())) {  // IHDR's width and height
    auto be32 = [&](std::size_t at) {
      return (std::int64_t{bytes[at]} << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3];
    };
    check_photo_limit(be32(16), be32(20), options.max_pixels, "PNG");
  }
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    JpegDecoder decoder;
    RgbImage image = decoder.decode(bytes, &options);
    return apply_orientation(std::move(image), decoder.orientation());
  }
  return decode_to_rgb(bytes);  // PNG, and every error, as the batch pipeline has them
}

}  // namespace orchard::image
