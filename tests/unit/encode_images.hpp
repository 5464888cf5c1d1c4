#pragma once
// Encoders for the unit tests' images, made in memory: baseline JPEG (libjpeg) and PNG (libpng).
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <csetjmp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "orchard/image/decode.hpp"

namespace orchard::image::test_util {

// Encodes an RGB image as a baseline JPEG (4:2:0, libjpeg's defaults) at the given quality.
inline std::vector<std::uint8_t> encode_jpeg(const RgbImage& img, int quality = 92) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = img.width;
  c.image_height = img.height;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(img.pixels.data() + static_cast<std::size_t>(c.next_scanline) * img.width * 3);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::vector<std::uint8_t> out(buf, buf + size);
  std::free(buf);
  return out;
}

// Encodes a PNG of the given bit depth (8 or 16) and colour type from rows of `row_bytes` bytes
// each, already in the file's layout (16-bit samples big-endian).
inline std::vector<std::uint8_t> encode_png_rows(int width, int height, int bit_depth, int color_type,
                                                 const std::uint8_t* rows, std::size_t row_bytes) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<std::uint8_t> out;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    ADD_FAILURE() << "libpng could not write the test image";
    return {};
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        auto* o = static_cast<std::vector<std::uint8_t>*>(png_get_io_ptr(p));
        o->insert(o->end(), data, data + n);
      },
      nullptr);
  png_set_IHDR(png, info, width, height, bit_depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(rows + y * row_bytes));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// Encodes an 8-bit RGB PNG.
inline std::vector<std::uint8_t> encode_png(const RgbImage& img) {
  return encode_png_rows(img.width, img.height, 8, PNG_COLOR_TYPE_RGB, img.pixels.data(),
                         static_cast<std::size_t>(img.width) * 3);
}

}  // namespace orchard::image::test_util
