// Unit tests of orchard::image: decode errors and special modes, resize and normalisation.
// Expected pixel values come from Pillow 12 (computed once in Python and written here) or from
// the definition of the operation, never from the code under test.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/image/decode.hpp"
#include "encode_images.hpp"
#include "orchard/image/resize.hpp"

#ifndef ORCHARD_SHARED_DIR
#define ORCHARD_SHARED_DIR "/work/shared"
#endif

namespace {

using orchard::image::decode_to_rgb;
using orchard::image::resize_bicubic;
using orchard::image::RgbImage;
using Bytes = std::vector<std::uint8_t>;

// A fixed fruits-360 Test image: 100x100 colour JPEG.
Bytes shared_jpeg() {
  namespace fs = std::filesystem;
  const fs::path file = fs::path(ORCHARD_SHARED_DIR) / "data" / "fruits-360" / "Test" / "Apple Braeburn 1" / "r_80_100.jpg";
  if (!fs::is_regular_file(file)) ADD_FAILURE() << "missing test image " << file;
  std::ifstream f(file, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Message of the orchard::Error thrown by decode_to_rgb, or "" if none.
std::string decode_error(const Bytes& bytes) {
  try {
    decode_to_rgb(bytes);
  } catch (const orchard::Error& e) {
    return e.what();
  }
  return "";
}

// Returns bytes with the JPEG frame header (SOF0/1/2) claiming width x height.
Bytes patch_sof(Bytes b, int width, int height) {
  for (std::size_t i = 2; i + 9 < b.size();) {
    EXPECT_EQ(b[i], 0xFF);
    const int marker = b[i + 1];
    const std::size_t len = (b[i + 2] << 8) | b[i + 3];
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {
      b[i + 5] = static_cast<std::uint8_t>(height >> 8);
      b[i + 6] = static_cast<std::uint8_t>(height & 255);
      b[i + 7] = static_cast<std::uint8_t>(width >> 8);
      b[i + 8] = static_cast<std::uint8_t>(width & 255);
      return b;
    }
    i += 2 + len;
  }
  ADD_FAILURE() << "no SOF marker";
  return b;
}

// Encodes 16-bit samples (big-endian in the file) as a PNG in memory with libpng's writer.
Bytes encode_png16(int width, int height, int color_type, const std::vector<std::uint16_t>& s) {
  const int channels = color_type == PNG_COLOR_TYPE_RGB ? 3 : 1;
  std::vector<std::uint8_t> bytes(s.size() * 2);
  for (std::size_t i = 0; i < s.size(); ++i) {
    bytes[2 * i] = static_cast<std::uint8_t>(s[i] >> 8);
    bytes[2 * i + 1] = static_cast<std::uint8_t>(s[i] & 255);
  }
  return orchard::image::test_util::encode_png_rows(width, height, 16, color_type, bytes.data(),
                                                    static_cast<std::size_t>(width) * channels * 2);
}

using orchard::image::test_util::encode_jpeg;

RgbImage constant_image(int w, int h, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  RgbImage img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  for (std::size_t i = 0; i < img.pixels.size(); i += 3) {
    img.pixels[i] = r;
    img.pixels[i + 1] = g;
    img.pixels[i + 2] = b;
  }
  return img;
}

// A one-row gray image given as values, in RGB.
RgbImage gray_row(const std::vector<std::uint8_t>& v) {
  RgbImage img;
  img.width = static_cast<int>(v.size());
  img.height = 1;
  for (auto x : v) img.pixels.insert(img.pixels.end(), {x, x, x});
  return img;
}

// ---- decode ----------------------------------------------------------------------------------

TEST(ImageDecode, RealJpegDecodesTo100x100) {
  const RgbImage img = decode_to_rgb(shared_jpeg());
  EXPECT_EQ(img.width, 100);
  EXPECT_EQ(img.height, 100);
  EXPECT_EQ(img.pixels.size(), 100u * 100u * 3u);
}

TEST(ImageDecode, EmptyFileIsAnError) {
  const std::string msg = decode_error({});
  EXPECT_NE(msg.find("empty file"), std::string::npos) << msg;
}

TEST(ImageDecode, TruncatedJpegIsAnError) {
  Bytes b = shared_jpeg();
  ASSERT_GT(b.size(), 1000u);
  b.resize(b.size() / 2);
  const std::string msg = decode_error(b);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(ImageDecode, JpegWithoutEndMarkerIsTruncatedAsInPillow) {
  Bytes b = shared_jpeg();
  b.resize(b.size() - 2);  // drop FF D9
  const std::string msg = decode_error(b);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(ImageDecode, JunkAfterEndMarkerIsIgnored) {
  const Bytes b = shared_jpeg();
  Bytes junk = b;
  for (int i = 0; i < 100; ++i) junk.push_back(static_cast<std::uint8_t>(i * 7));
  EXPECT_EQ(decode_to_rgb(junk).pixels, decode_to_rgb(b).pixels);
}

TEST(ImageDecode, TextNamedJpgIsAnError) {
  const std::string text = "hello, this is a text file named photo.jpg\n";
  const std::string msg = decode_error(Bytes(text.begin(), text.end()));
  EXPECT_NE(msg.find("not a JPEG or PNG file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("68 65 6C 6C"), std::string::npos) << msg;  // "hell" in hex
}

TEST(ImageDecode, HugeJpegHeaderIsRefusedBeforeDecoding) {
  const std::string msg = decode_error(patch_sof(shared_jpeg(), 60000, 60000));
  EXPECT_NE(msg.find("60000x60000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("178956970"), std::string::npos) << msg;
}

TEST(ImageDecode, PixelLimitIsPillowsDecompressionBombLimit) {
  // 65000 x 2754 = 179,010,000 pixels: just above 2 * 89,478,485.
  const std::string msg = decode_error(patch_sof(shared_jpeg(), 65000, 2754));
  EXPECT_NE(msg.find("65000x2754"), std::string::npos) << msg;
}

TEST(ImageDecode, LargeJpegDecodes) {
  RgbImage src;
  src.width = 4000;
  src.height = 3000;
  src.pixels.resize(4000u * 3000u * 3u);
  for (int y = 0; y < 3000; ++y) {
    for (int x = 0; x < 4000; ++x) {
      std::uint8_t* p = &src.pixels[(static_cast<std::size_t>(y) * 4000 + x) * 3];
      p[0] = static_cast<std::uint8_t>(x * 255 / 3999);
      p[1] = static_cast<std::uint8_t>(y * 255 / 2999);
      p[2] = 100;
    }
  }
  const RgbImage img = decode_to_rgb(encode_jpeg(src, 95));
  ASSERT_EQ(img.width, 4000);
  ASSERT_EQ(img.height, 3000);
  int worst = 0;
  for (std::size_t i = 0; i < img.pixels.size(); i += 997) {
    worst = std::max(worst, std::abs(int(img.pixels[i]) - int(src.pixels[i])));
  }
  EXPECT_LE(worst, 8);  // lossy, but a smooth gradient survives closely
}

TEST(ImageDecode, CorruptJpegReportsLibjpegMessage) {
  Bytes b = shared_jpeg();
  // Overwrite the start of the entropy-coded data with an undefined marker.
  std::size_t sos = 0;
  for (std::size_t i = 0; i + 1 < b.size(); ++i) {
    if (b[i] == 0xFF && b[i + 1] == 0xDA) sos = i;
  }
  ASSERT_GT(sos, 0u);
  const std::size_t data = sos + 2 + ((b[sos + 2] << 8) | b[sos + 3]);
  b[data + 10] = 0xFF;
  b[data + 11] = 0x03;
  const std::string msg = decode_error(b);
  EXPECT_NE(msg.find("corrupt JPEG"), std::string::npos) << msg;
  EXPECT_NE(msg.find("marker"), std::string::npos) << msg;
}

TEST(ImageDecode, Png16BitGrayClipsLikePillow) {
  // Pillow opens it as mode I;16 and convert('RGB') clips values above 255 to 255.
  const std::vector<std::uint16_t> v = {0, 1, 0xAB, 255, 256, 0x1234, 0xFFFF, 300};
  const RgbImage img = decode_to_rgb(encode_png16(8, 1, PNG_COLOR_TYPE_GRAY, v));
  ASSERT_EQ(img.width, 8);
  ASSERT_EQ(img.height, 1);
  const std::vector<std::uint8_t> want = {0, 1, 0xAB, 255, 255, 255, 255, 255};
  for (int x = 0; x < 8; ++x) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.pixels[x * 3 + c], want[x]) << "x=" << x;
  }
}

TEST(ImageDecode, Png16BitRgbKeepsHighByte) {
  const std::vector<std::uint16_t> v = {0x12FF, 0x00FF, 0xFF00, 0xABCD, 0x0102, 0x8080};
  const RgbImage img = decode_to_rgb(encode_png16(2, 1, PNG_COLOR_TYPE_RGB, v));
  ASSERT_EQ(img.width, 2);
  const std::vector<std::uint8_t> want = {0x12, 0x00, 0xFF, 0xAB, 0x01, 0x80};
  EXPECT_EQ(img.pixels, want);
}

TEST(ImageDecode, TruncatedPngIsAnError) {
  std::vector<std::uint16_t> v(64 * 64 * 3);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint16_t>(i * 2654435761u);
  Bytes b = encode_png16(64, 64, PNG_COLOR_TYPE_RGB, v);
  b.resize(b.size() / 2);
  const std::string msg = decode_error(b);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

// ---- resize ----------------------------------------------------------------------------------

TEST(ImageResize, ConstantImageStaysConstant) {
  for (auto [w, h] : {std::pair{100, 100}, {300, 200}, {7, 3}, {1, 1}, {224, 50}, {1000, 750}}) {
    const RgbImage out = resize_bicubic(constant_image(w, h, 0, 255, 137), 224, 224);
    ASSERT_EQ(out.width, 224);
    ASSERT_EQ(out.height, 224);
    for (std::size_t i = 0; i < out.pixels.size(); i += 3) {
      ASSERT_EQ(out.pixels[i], 0) << w << "x" << h;
      ASSERT_EQ(out.pixels[i + 1], 255) << w << "x" << h;
      ASSERT_EQ(out.pixels[i + 2], 137) << w << "x" << h;
    }
  }
}

TEST(ImageResize, SameSizeIsACopy) {
  RgbImage img = constant_image(224, 224, 1, 2, 3);
  img.pixels[5] = 200;
  EXPECT_EQ(resize_bicubic(img, 224, 224).pixels, img.pixels);
}

TEST(ImageResize, MatchesPillowOnSmallRows) {
  // Image.fromarray(np.array([[0, 255]], np.uint8)).convert('RGB').resize((4, 1)) etc.
  auto row_of = [](const RgbImage& img) {
    std::vector<int> v;
    for (std::size_t i = 0; i < img.pixels.size(); i += 3) v.push_back(img.pixels[i]);
    return v;
  };
  EXPECT_EQ(row_of(resize_bicubic(gray_row({0, 255}), 4, 1)), (std::vector<int>{0, 53, 202, 255}));
  EXPECT_EQ(row_of(resize_bicubic(gray_row({0, 255}), 7, 1)),
            (std::vector<int>{0, 0, 43, 128, 212, 255, 255}));
  EXPECT_EQ(row_of(resize_bicubic(gray_row({10, 200, 30, 90, 250, 0, 128, 64}), 3, 1)),
            (std::vector<int>{90, 123, 84}));
  // The same column, resized vertically.
  RgbImage col = gray_row({10, 200, 30, 90, 250, 0, 128, 64});
  col.height = col.width;
  col.width = 1;
  EXPECT_EQ(row_of(resize_bicubic(col, 1, 3)), (std::vector<int>{90, 123, 84}));
}

TEST(ImageResize, RejectsEmptyTarget) {
  EXPECT_THROW(resize_bicubic(constant_image(4, 4, 0, 0, 0), 0, 224), orchard::Error);
}

// ---- normalisation ---------------------------------------------------------------------------

TEST(ImageNormalize, EndpointsAndLayout) {
  RgbImage img = constant_image(2, 1, 0, 255, 127);
  img.pixels[3] = 255;  // pixel x=1: R=255, G=0, B=128
  img.pixels[4] = 0;
  img.pixels[5] = 128;
  std::vector<float> out(6, 99.0f);
  orchard::image::to_chw_normalized(img, out.data());
  // CHW: R plane (x=0, x=1), G plane, B plane.
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], 1.0f);
  EXPECT_EQ(out[3], -1.0f);
  // numpy: np.float32(127) / 127.5 - 1.0 and the same for 128, in float32.
  EXPECT_EQ(out[4], -0x1.0101p-8f);
  EXPECT_EQ(out[5], 0x1.0102p-8f);
}

}  // namespace
