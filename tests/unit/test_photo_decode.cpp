// Unit tests of orchard::image::decode_photo: DCT scaling to a minimum side, EXIF orientation
// (PIL.ImageOps.exif_transpose's meaning of tags 1-8), robustness against malformed EXIF, and
// equality with decode_to_rgb where neither applies. Test JPEGs are built here with libjpeg's
// encoder (flat colour quadrants, so corners survive JPEG loss) with an APP1 EXIF segment inserted.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/image/decode.hpp"
#include "encode_images.hpp"

#ifndef ORCHARD_SHARED_DIR
#define ORCHARD_SHARED_DIR "/work/shared"
#endif

namespace {

using orchard::image::decode_photo;
using orchard::image::decode_to_rgb;
using orchard::image::PhotoOptions;
using orchard::image::RgbImage;
using Bytes = std::vector<std::uint8_t>;

struct Rgb {
  std::uint8_t r, g, b;
};
// Quadrant colours of the test pattern: top-left, top-right, bottom-left, bottom-right.
constexpr Rgb kTL{220, 30, 30};    // red
constexpr Rgb kTR{30, 200, 30};    // green
constexpr Rgb kBL{30, 30, 220};    // blue
constexpr Rgb kBR{235, 235, 235};  // white

// A w x h image of four flat quadrants (split at w/2, h/2).
RgbImage quadrants(int w, int h) {
  RgbImage img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<std::size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const Rgb c = y < h / 2 ? (x < w / 2 ? kTL : kTR) : (x < w / 2 ? kBL : kBR);
      std::uint8_t* p = &img.pixels[(static_cast<std::size_t>(y) * w + x) * 3];
      p[0] = c.r;
      p[1] = c.g;
      p[2] = c.b;
    }
  }
  return img;
}

using orchard::image::test_util::encode_jpeg;

using orchard::image::test_util::encode_png;

// One IFD entry: the 4-byte value field is given as raw bytes (already in the file's byte order).
struct Entry {
  std::uint16_t tag, type;
  std::uint32_t count;
  std::uint8_t value[4];
};

void put16(Bytes& b, std::uint32_t v, bool little) {
  if (little) {
    b.push_back(v & 255);
    b.push_back((v >> 8) & 255);
  } else {
    b.push_back((v >> 8) & 255);
    b.push_back(v & 255);
  }
}
void put32(Bytes& b, std::uint32_t v, bool little) {
  if (little) {
    put16(b, v & 0xFFFF, true);
    put16(b, v >> 16, true);
  } else {
    put16(b, v >> 16, false);
    put16(b, v & 0xFFFF, false);
  }
}

// A SHORT value in an entry's value field, in the given byte order.
Entry short_entry(std::uint16_t tag, std::uint16_t v, bool little, std::uint32_t count = 1) {
  Entry e{tag, 3, count, {0, 0, 0, 0}};
  e.value[little ? 0 : 1] = v & 255;
  e.value[little ? 1 : 0] = v >> 8;
  return e;
}

// A TIFF block (what follows "Exif\0\0"): header, IFD0 at offset 8 with the entries, next IFD 0.
Bytes tiff(const std::vector<Entry>& entries, bool little) {
  Bytes b;
  b.push_back(little ? 'I' : 'M');
  b.push_back(little ? 'I' : 'M');
  put16(b, 42, little);
  put32(b, 8, little);
  put16(b, static_cast<std::uint32_t>(entries.size()), little);
  for (const Entry& e : entries) {
    put16(b, e.tag, little);
    put16(b, e.type, little);
    put32(b, e.count, little);
    b.insert(b.end(), e.value, e.value + 4);
  }
  put32(b, 0, little);
  return b;
}

// A well-formed TIFF block whose IFD0 holds ImageWidth (LONG) then Orientation (SHORT).
Bytes orientation_tiff(int orientation, bool little = true) {
  Entry width{0x0100, 4, 1, {0, 0, 0, 0}};
  width.value[little ? 0 : 3] = 64;
  return tiff({width, short_entry(0x0112, static_cast<std::uint16_t>(orientation), little)}, little);
}

// An APP1 payload: "Exif\0\0" then the TIFF block.
Bytes exif_app1(const Bytes& tiff_block) {
  static const std::uint8_t kExif[6] = {'E', 'x', 'i', 'f', 0, 0};
  Bytes p(6 + tiff_block.size());
  std::copy(kExif, kExif + 6, p.begin());
  std::copy(tiff_block.begin(), tiff_block.end(), p.begin() + 6);
  return p;
}

// The JPEG with an APP1 segment carrying `payload` inserted right after SOI.
Bytes with_app1(const Bytes& jpeg, const Bytes& payload) {
  EXPECT_LE(payload.size() + 2, 0xFFFFu);
  const std::size_t len = payload.size() + 2;
  Bytes out(jpeg.begin(), jpeg.begin() + 2);  // FF D8
  out.push_back(0xFF);
  out.push_back(0xE1);
  out.push_back(static_cast<std::uint8_t>(len >> 8));
  out.push_back(static_cast<std::uint8_t>(len & 255));
  out.insert(out.end(), payload.begin(), payload.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

PhotoOptions opts(int min_side = 0, bool orient = true) {
  PhotoOptions o;
  o.min_side = min_side;
  o.apply_exif_orientation = orient;
  return o;
}

// The pixel a few pixels in from a corner (0 TL, 1 TR, 2 BL, 3 BR), away from quadrant edges.
Rgb corner(const RgbImage& img, int which) {
  const int inset = 3;
  const int x = (which & 1) ? img.width - 1 - inset : inset;
  const int y = (which & 2) ? img.height - 1 - inset : inset;
  const std::uint8_t* p = &img.pixels[(static_cast<std::size_t>(y) * img.width + x) * 3];
  return {p[0], p[1], p[2]};
}

::testing::AssertionResult near(Rgb got, Rgb want, const char* where) {
  const int tol = 16;
  if (std::abs(got.r - want.r) <= tol && std::abs(got.g - want.g) <= tol &&
      std::abs(got.b - want.b) <= tol)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << where << ": got (" << int(got.r) << "," << int(got.g) << "," << int(got.b)
         << "), want (" << int(want.r) << "," << int(want.g) << "," << int(want.b) << ")";
}

// Expects the four corners of img to show the given quadrant colours (TL, TR, BL, BR of the output).
void expect_corners(const RgbImage& img, Rgb tl, Rgb tr, Rgb bl, Rgb br) {
  EXPECT_TRUE(near(corner(img, 0), tl, "top-left"));
  EXPECT_TRUE(near(corner(img, 1), tr, "top-right"));
  EXPECT_TRUE(near(corner(img, 2), bl, "bottom-left"));
  EXPECT_TRUE(near(corner(img, 3), br, "bottom-right"));
}

// Reference for exif_transpose, written from PIL's definitions: output (x, y) of size W' x H'
// takes input pixel (sx, sy) of the w x h input.
RgbImage reference_orient(const RgbImage& in, int o) {
  const int w = in.width, h = in.height;
  const bool swap = o >= 5 && o <= 8;
  RgbImage out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = w - 1 - x; break;                   // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;   // ROTATE_180
        case 4: sy = h - 1 - y; break;                   // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                   // TRANSPOSE
        case 6: sx = y; sy = h - 1 - x; break;           // ROTATE_270 (90 clockwise)
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;   // TRANSVERSE
        case 8: sx = w - 1 - y; sy = x; break;           // ROTATE_90 (90 counter-clockwise)
        default: break;
      }
      for (int c = 0; c < 3; ++c) {
        out.pixels[(static_cast<std::size_t>(y) * out.width + x) * 3 + c] =
            in.pixels[(static_cast<std::size_t>(sy) * w + sx) * 3 + c];
      }
    }
  }
  return out;
}

Bytes read_file(const std::filesystem::path& file) {
  std::ifstream f(file, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The first JPEG (by name) of each of the first `classes` fruits-360 Test classes (100x100).
std::vector<std::filesystem::path> shared_test_jpegs(std::size_t classes) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(ORCHARD_SHARED_DIR) / "data" / "fruits-360" / "Test";
  std::vector<fs::path> dirs;
  if (fs::is_directory(root)) {
    for (const auto& d : fs::directory_iterator(root)) {
      if (d.is_directory()) dirs.push_back(d.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<fs::path> files;
  for (std::size_t i = 0; i < dirs.size() && files.size() < classes; ++i) {
    std::vector<fs::path> jpgs;
    for (const auto& f : fs::directory_iterator(dirs[i])) {
      if (f.path().extension() == ".jpg") jpgs.push_back(f.path());
    }
    if (jpgs.empty()) continue;
    files.push_back(*std::min_element(jpgs.begin(), jpgs.end()));
  }
  return files;
}

void expect_same(const RgbImage& a, const RgbImage& b) {
  ASSERT_EQ(a.width, b.width);
  ASSERT_EQ(a.height, b.height);
  EXPECT_TRUE(a.pixels == b.pixels);
}

// ---------------------------------------------------------------------------------------------
// (1) DCT scaling: the smallest n/8 with ceil(w*n/8) >= min_side and ceil(h*n/8) >= min_side.
// ---------------------------------------------------------------------------------------------

TEST(PhotoDecode, ScalesToSmallestSizeAtLeastMinSide) {
  struct Case {
    int w, h, min_side, want_w, want_h;
  };
  const Case cases[] = {
      {4000, 3000, 224, 500, 375},   // 1/8
      {3000, 4000, 224, 375, 500},   // 1/8, portrait
      {1000, 800, 224, 375, 300},    // 2/8 gives 250x200 (200 < 224): 3/8
      {1001, 801, 224, 376, 301},    // 3/8, rounded up: ceil(375.375) x ceil(300.375)
      {448, 448, 224, 224, 224},     // 4/8 exactly
      {449, 449, 224, 225, 225},     // 4/8: ceil(224.5); 3/8 gives 169
      {300, 250, 224, 300, 250},     // 7/8 gives 263x219 (219 < 224): 8/8, not scaled
      {1000, 200, 224, 1000, 200},   // already below min_side on a side: not scaled
      {224, 224, 224, 224, 224},     // exactly min_side: only 8/8 fits
      {1000, 800, 1, 125, 100},      // min_side 1: 1/8
      {1000, 800, 0, 1000, 800},     // min_side 0: no scaling
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.w) + "x" + std::to_string(c.h) + " min_side " +
                 std::to_string(c.min_side));
    const Bytes jpeg = encode_jpeg(quadrants(c.w, c.h));
    const RgbImage img = decode_photo(jpeg, opts(c.min_side));
    EXPECT_EQ(img.width, c.want_w);
    EXPECT_EQ(img.height, c.want_h);
    EXPECT_EQ(img.pixels.size(), static_cast<std::size_t>(img.width) * img.height * 3);
    expect_corners(img, kTL, kTR, kBL, kBR);
  }
}

TEST(PhotoDecode, UnscaledWhenSmallerThanMinSideEqualsDecodeToRgb) {
  const Bytes jpeg = encode_jpeg(quadrants(200, 120));
  expect_same(decode_photo(jpeg, opts(224)), decode_to_rgb(jpeg));
}

TEST(PhotoDecode, PixelLimitCheckedOnFullSizeBeforeScaling) {
  // A header claiming 20000 x 10000 (200,000,000 pixels, above kMaxPixels) is refused even though
  // 1/8 scaling would make it 2500 x 1250.
  Bytes jpeg = encode_jpeg(quadrants(64, 64));
  bool patched = false;
  for (std::size_t i = 2; i + 9 < jpeg.size();) {
    const int marker = jpeg[i + 1];
    const std::size_t len = (jpeg[i + 2] << 8) | jpeg[i + 3];
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {
      jpeg[i + 5] = 10000 >> 8;
      jpeg[i + 6] = 10000 & 255;
      jpeg[i + 7] = 20000 >> 8;
      jpeg[i + 8] = 20000 & 255;
      patched = true;
      break;
    }
    i += 2 + len;
  }
  ASSERT_TRUE(patched);
  try {
    decode_photo(jpeg, opts(224));
    FAIL() << "no error";
  } catch (const orchard::Error& e) {
    EXPECT_TRUE(e.is_bad_input());
    EXPECT_NE(std::string(e.what()).find("200000000 pixels"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// (2) EXIF orientation 1-8, as PIL.ImageOps.exif_transpose.
// ---------------------------------------------------------------------------------------------

TEST(PhotoDecode, AppliesEachExifOrientation) {
  // Output corners (TL, TR, BL, BR) per orientation, from PIL's transposes of the input quadrants.
  const Rgb want[9][4] = {
      {},
      {kTL, kTR, kBL, kBR},  // 1 as stored
      {kTR, kTL, kBR, kBL},  // 2 mirror left-right
      {kBR, kBL, kTR, kTL},  // 3 rotate 180
      {kBL, kBR, kTL, kTR},  // 4 mirror top-bottom
      {kTL, kBL, kTR, kBR},  // 5 transpose
      {kBL, kTL, kBR, kTR},  // 6 rotate 90 clockwise
      {kBR, kTR, kBL, kTL},  // 7 transverse
      {kTR, kBR, kTL, kBL},  // 8 rotate 90 counter-clockwise
  };
  const Bytes plain = encode_jpeg(quadrants(320, 240));
  const RgbImage stored = decode_to_rgb(plain);
  for (int o = 1; o <= 8; ++o) {
    for (bool little : {true, false}) {
      SCOPED_TRACE("orientation " + std::to_string(o) + (little ? " II" : " MM"));
      const Bytes jpeg = with_app1(plain, exif_app1(orientation_tiff(o, little)));
      const RgbImage img = decode_photo(jpeg, opts());
      const bool swap = o >= 5;
      EXPECT_EQ(img.width, swap ? 240 : 320);
      EXPECT_EQ(img.height, swap ? 320 : 240);
      expect_corners(img, want[o][0], want[o][1], want[o][2], want[o][3]);
      // Exactly the stored pixels, moved (the APP1 segment does not change the decoded data).
      expect_same(img, reference_orient(stored, o));
    }
  }
}

TEST(PhotoDecode, OrientationAppliedAfterScaling) {
  const Bytes jpeg = with_app1(encode_jpeg(quadrants(1000, 800)), exif_app1(orientation_tiff(6)));
  const RgbImage img = decode_photo(jpeg, opts(224));  // 3/8: 375x300, then rotated
  EXPECT_EQ(img.width, 300);
  EXPECT_EQ(img.height, 375);
  expect_corners(img, kBL, kTL, kBR, kTR);
}

// ---------------------------------------------------------------------------------------------
// (3) Malformed EXIF is ignored; (4) apply_exif_orientation = false ignores the tag.
// ---------------------------------------------------------------------------------------------

TEST(PhotoDecode, MalformedExifIsIgnored) {
  const Bytes plain = encode_jpeg(quadrants(160, 96));
  const RgbImage stored = decode_to_rgb(plain);
  const Bytes good = orientation_tiff(6);

  std::vector<std::pair<std::string, Bytes>> payloads;
  payloads.push_back({"Exif header only", exif_app1({})});
  payloads.push_back({"'Exif' without its two zero bytes", Bytes{'E', 'x', 'i', 'f'}});
  payloads.push_back({"TIFF header cut short", exif_app1(Bytes(good.begin(), good.begin() + 5))});
  {
    Bytes t = good;
    t[0] = 'X';
    t[1] = 'X';
    payloads.push_back({"unknown byte order marker", exif_app1(t)});
    t[0] = 'I';
    t[1] = 'M';
    payloads.push_back({"mixed byte order marker", exif_app1(t)});
  }
  {
    // Big-endian entries under an "II" header: the orientation reads as 0x0600, out of range.
    Bytes t = orientation_tiff(6, false);
    t[0] = t[1] = 'I';
    payloads.push_back({"wrong byte order for the data", exif_app1(t)});
  }
  {
    Bytes t = good;
    t[2] = 43;
    payloads.push_back({"bad TIFF magic", exif_app1(t)});
  }
  for (std::uint32_t off : {0u, 4u, 0xFFFFFFF0u, 0xFFFFFFFFu,
                            static_cast<std::uint32_t>(good.size() - 1),
                            static_cast<std::uint32_t>(good.size())}) {
    Bytes t = good;
    t[4] = off & 255;
    t[5] = (off >> 8) & 255;
    t[6] = (off >> 16) & 255;
    t[7] = off >> 24;
    payloads.push_back({"IFD offset " + std::to_string(off), exif_app1(t)});
  }
  {
    // One real entry (not the orientation) but a count of 0xFFFF: the list runs past the end.
    Entry width{0x0100, 4, 1, {64, 0, 0, 0}};
    Bytes t = tiff({width}, true);
    t[8] = t[9] = 0xFF;
    payloads.push_back({"entry count past the end", exif_app1(t)});
  }
  payloads.push_back({"orientation entry cut short",
                      exif_app1(Bytes(good.begin(), good.begin() + 10 + 12 + 6))});
  {
    Entry as_long{0x0112, 4, 1, {6, 0, 0, 0}};
    payloads.push_back({"orientation as LONG", exif_app1(tiff({as_long}, true))});
  }
  payloads.push_back({"orientation count 2", exif_app1(tiff({short_entry(0x0112, 6, true, 2)}, true))});
  payloads.push_back({"orientation count 0", exif_app1(tiff({short_entry(0x0112, 6, true, 0)}, true))});
  payloads.push_back({"orientation 0", exif_app1(orientation_tiff(0))});
  payloads.push_back({"orientation 9", exif_app1(orientation_tiff(9))});
  payloads.push_back({"orientation 0xFFFF", exif_app1(orientation_tiff(0xFFFF))});
  payloads.push_back({"no entries", exif_app1(tiff({}, true))});
  {
    const std::string xmp = "http://ns.adobe.com/xap/1.0/";
    Bytes p(xmp.begin(), xmp.end());
    p.push_back(0);
    p.insert(p.end(), good.begin(), good.end());  // an orientation, but not in an Exif segment
    payloads.push_back({"XMP segment", p});
  }

  for (const auto& [name, payload] : payloads) {
    SCOPED_TRACE(name);
    const Bytes jpeg = with_app1(plain, payload);
    RgbImage img;
    ASSERT_NO_THROW(img = decode_photo(jpeg, opts()));
    expect_same(img, stored);
  }
}

TEST(PhotoDecode, EveryTruncationOfExifIsSafe) {
  // Every prefix of a well-formed block decodes; the orientation applies exactly when its entry
  // (the second, ending at byte 8 + 2 + 2 * 12) is wholly present, as Pillow reads a cut IFD.
  const Bytes plain = encode_jpeg(quadrants(64, 48));
  const RgbImage stored = decode_to_rgb(plain);
  const RgbImage rotated = reference_orient(stored, 8);
  for (bool little : {true, false}) {
    const Bytes good = orientation_tiff(8, little);
    for (std::size_t n = 0; n <= good.size(); ++n) {
      SCOPED_TRACE(std::to_string(n) + (little ? " bytes II" : " bytes MM"));
      const Bytes jpeg = with_app1(plain, exif_app1(Bytes(good.begin(), good.begin() + n)));
      RgbImage img;
      ASSERT_NO_THROW(img = decode_photo(jpeg, opts()));
      expect_same(img, n >= 8 + 2 + 2 * 12 ? rotated : stored);
    }
  }
}

TEST(PhotoDecode, FirstExifSegmentCounts) {
  const Bytes plain = encode_jpeg(quadrants(64, 48));
  // with_app1 inserts after SOI, so the segment added last comes first.
  const Bytes jpeg = with_app1(with_app1(plain, exif_app1(orientation_tiff(6))),
                               exif_app1(orientation_tiff(3)));
  expect_same(decode_photo(jpeg, opts()), reference_orient(decode_to_rgb(plain), 3));
}

TEST(PhotoDecode, OrientationIgnoredWhenNotAsked) {
  const Bytes plain = encode_jpeg(quadrants(320, 240));
  for (int o = 2; o <= 8; ++o) {
    SCOPED_TRACE("orientation " + std::to_string(o));
    const Bytes jpeg = with_app1(plain, exif_app1(orientation_tiff(o)));
    expect_same(decode_photo(jpeg, opts(0, false)), decode_to_rgb(jpeg));
    const RgbImage scaled = decode_photo(jpeg, opts(100, false));  // 4/8 (3/8 is 120x90), as stored
    EXPECT_EQ(scaled.width, 160);
    EXPECT_EQ(scaled.height, 120);
    expect_corners(scaled, kTL, kTR, kBL, kBR);
  }
}

// ---------------------------------------------------------------------------------------------
// (5) Without scaling or EXIF, decode_photo is decode_to_rgb; PNG always is.
// ---------------------------------------------------------------------------------------------

TEST(PhotoDecode, EqualsDecodeToRgbOnRealImages) {
  const auto files = shared_test_jpegs(4);
  ASSERT_EQ(files.size(), 4u) << "fruits-360 Test images missing under " ORCHARD_SHARED_DIR;
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const Bytes bytes = read_file(file);
    const RgbImage want = decode_to_rgb(bytes);
    EXPECT_EQ(want.width, 100);
    EXPECT_EQ(want.height, 100);
    expect_same(decode_photo(bytes, opts(0, true)), want);
    expect_same(decode_photo(bytes, opts(0, false)), want);
    expect_same(decode_photo(bytes, opts(224, true)), want);  // 100 < 224: not scaled
  }
}

TEST(PhotoDecode, PngIsDecodedAsDecodeToRgb) {
  const Bytes png = encode_png(quadrants(400, 300));
  const RgbImage img = decode_photo(png, opts(50));
  EXPECT_EQ(img.width, 400);  // no scaling for PNG
  EXPECT_EQ(img.height, 300);
  expect_same(img, decode_to_rgb(png));
  expect_same(img, quadrants(400, 300));
}

// ---------------------------------------------------------------------------------------------
// (6) Bad bytes throw orchard::Error (kBadInput), with decode_to_rgb's message.
// ---------------------------------------------------------------------------------------------

TEST(PhotoDecode, BadBytesThrowBadInput) {
  const Bytes jpeg = with_app1(encode_jpeg(quadrants(320, 240)), exif_app1(orientation_tiff(6)));
  const Bytes png = encode_png(quadrants(40, 30));
  const std::vector<std::pair<std::string, Bytes>> bad = {
      {"empty", {}},
      {"GIF", {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0}},
      {"SOI only", {0xFF, 0xD8, 0xFF}},
      {"JPEG cut in its data", Bytes(jpeg.begin(), jpeg.begin() + jpeg.size() / 2)},
      {"JPEG cut in its EXIF", Bytes(jpeg.begin(), jpeg.begin() + 20)},
      {"PNG cut short", Bytes(png.begin(), png.begin() + png.size() / 2)},
  };
  for (const auto& [name, bytes] : bad) {
    for (int min_side : {0, 224}) {
      SCOPED_TRACE(name + " min_side " + std::to_string(min_side));
      std::string want;
      try {
        decode_to_rgb(bytes);
      } catch (const orchard::Error& e) {
        want = e.what();
      }
      ASSERT_FALSE(want.empty());
      try {
        decode_photo(bytes, opts(min_side));
        ADD_FAILURE() << "no error";
      } catch (const orchard::Error& e) {
        EXPECT_TRUE(e.is_bad_input());
        EXPECT_EQ(std::string(e.what()), want);
      }
    }
  }
}

}  // namespace
