// Pillow-identical BICUBIC resize (libImaging/Resample.c, 8 bits per channel) and Keras'
// mobilenet_v2 normalisation.
//
// The coefficients are computed in double exactly as Pillow does; the expressions must not be
// contracted into fused multiply-adds (which -march=... with FMA would allow), or a coefficient
// may differ in its last bit and a pixel by one.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "orchard/image/resize.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "orchard/error.hpp"

namespace orchard::image {
namespace {

// 8-bit result, 2 bits of headroom for the filter's negative lobes, the rest fraction.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kSupport = 2.0;  // bicubic

double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point filter taps for one axis: output i reads `count[i]` inputs from `first[i]`,
// with weights k[i * ksize + j].
struct Taps {
  int in_size = -1;
  int out_size = -1;
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<std::int32_t> k;
};

void compute_taps(int in_size, int out_size, Taps& t) {
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kSupport * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.in_size = in_size;
  t.out_size = out_size;
  t.ksize = ksize;
  t.first.assign(out_size, 0);
  t.count.assign(out_size, 0);
  t.k.assign(static_cast<std::size_t>(out_size) * ksize, 0);
  std::vector<double> w(ksize);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int lo = static_cast<int>(center - support + 0.5);  // truncation, as Pillow's (int) cast
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      const double v = bicubic((j + lo - center + 0.5) * ss);
      w[j] = v;
      sum += v;
    }
    std::int32_t* k = &t.k[static_cast<std::size_t>(i) * ksize];
    for (int j = 0; j < n; ++j) {
      const double v = sum != 0.0 ? w[j] / sum : w[j];
      // Round half away from zero into 22-bit fixed point, as Pillow's normalize_coeffs_8bpc.
      k[j] = v < 0 ? static_cast<std::int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<std::int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    t.first[i] = lo;
    t.count[i] = n;
  }
}

// A few sizes recur (100 -> 224 on both axes for the fruits set), so each thread keeps the taps
// of the last sizes it used.
const Taps& taps_for(int in_size, int out_size) {
  constexpr int kSlots = 4;
  thread_local Taps cache[kSlots];
  thread_local int next = 0;
  for (const Taps& t : cache) {
    if (t.in_size == in_size && t.out_size == out_size) return t;
  }
  Taps& t = cache[next];
  next = (next + 1) % kSlots;
  compute_taps(in_size, out_size, t);
  return t;
}

inline std::uint8_t clip8(std::int32_t ss) {
  const std::int32_t v = ss >> kPrecisionBits;  // arithmetic shift (C++20)
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

constexpr std::int32_t kHalf = 1 << (kPrecisionBits - 1);

// Horizontal pass over input rows [row0, row0 + rows): RGB in, RGB out.
//
// Two rows are done at once: each pixel pair is widened to 8 int32 lanes (R, G, B, 0 of row y,
// then of row y + 1), rows padded with `ksize` zero pixels so that every output pixel runs the
// same ksize taps (those past `count` weigh 0, as in Pillow), as 8-lane multiply-adds. The integer
// sums are exactly Pillow's; only the order of independent work changes.
using Lanes = std::int32_t __attribute__((vector_size(32)));

template <int KSize>
__attribute__((target_clones("avx2", "default")))
void resample_horizontal_k(const std::uint8_t* in, int in_w, int row0, int rows, const Taps& t,
                           std::uint8_t* out) {
  const int ksize = KSize > 0 ? KSize : t.ksize;
  const int out_w = t.out_size;
  std::vector<Lanes> wide(static_cast<std::size_t>(in_w + ksize), Lanes{});
  const std::size_t in_stride = static_cast<std::size_t>(in_w) * 3;
  const std::size_t out_stride = static_cast<std::size_t>(out_w) * 3;
  for (int y = 0; y < rows; y += 2) {
    const bool pair = y + 1 < rows;
    const std::uint8_t* a = in + in_stride * (row0 + y);
    const std::uint8_t* b = pair ? a + in_stride : a;
    for (int x = 0; x < in_w; ++x) {
      wide[x] = Lanes{a[3 * x], a[3 * x + 1], a[3 * x + 2], 0,
                      b[3 * x], b[3 * x + 1], b[3 * x + 2], 0};
    }
    std::uint8_t* da = out + out_stride * y;
    std::uint8_t* db = pair ? da + out_stride : da;
    for (int x = 0; x < out_w; ++x) {
      const std::int32_t* k = &t.k[static_cast<std::size_t>(x) * ksize];
      const Lanes* p = &wide[t.first[x]];
      Lanes s = Lanes{} + kHalf;
      for (int j = 0; j < ksize; ++j) s += p[j] * k[j];
      s >>= kPrecisionBits;
      s = s < 0 ? Lanes{} : s;
      s = s > 255 ? Lanes{} + 255 : s;
      // Row b first: when there is no pair, da == db and row a's values must win.
      db[3 * x + 0] = static_cast<std::uint8_t>(s[4]);
      db[3 * x + 1] = static_cast<std::uint8_t>(s[5]);
      db[3 * x + 2] = static_cast<std::uint8_t>(s[6]);
      da[3 * x + 0] = static_cast<std::uint8_t>(s[0]);
      da[3 * x + 1] = static_cast<std::uint8_t>(s[1]);
      da[3 * x + 2] = static_cast<std::uint8_t>(s[2]);
    }
  }
}

void resample_horizontal(const std::uint8_t* in, int in_w, int row0, int rows, const Taps& t,
                         std::uint8_t* out) {
  if (t.ksize == 5) {  // bicubic when enlarging (scale <= 1): the common 100 -> 224 case
    resample_horizontal_k<5>(in, in_w, row0, rows, t, out);
  } else {
    resample_horizontal_k<0>(in, in_w, row0, rows, t, out);
  }
}

// Vertical pass: `in` holds rows starting at input row `row0`. Every byte of an output row is
// the same weighted sum of the bytes above and below it, so whole rows are summed at once; the
// integer sums are exactly Pillow's. The AVX2 version does 8 bytes per step whatever the
// optimisation level; the portable one relies on the compiler's vectoriser (-O3).
void resample_vertical_portable(const std::uint8_t* in, int width, int row0, const Taps& t,
                                std::uint8_t* out) {
  const std::size_t stride = static_cast<std::size_t>(width) * 3;
  std::vector<std::int32_t> acc(stride);
  for (int y = 0; y < t.out_size; ++y) {
    const std::int32_t* k = &t.k[static_cast<std::size_t>(y) * t.ksize];
    const std::uint8_t* src = in + stride * (t.first[y] - row0);
    const int n = t.count[y];
    std::int32_t* a = acc.data();
    for (std::size_t i = 0; i < stride; ++i) a[i] = kHalf;
    for (int j = 0; j < n; ++j, src += stride) {
      const std::int32_t kj = k[j];
      for (std::size_t i = 0; i < stride; ++i) a[i] += src[i] * kj;
    }
    std::uint8_t* dst = out + stride * y;
    for (std::size_t i = 0; i < stride; ++i) dst[i] = clip8(a[i]);
  }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2")))
void resample_vertical_avx2(const std::uint8_t* in, int width, int row0, const Taps& t,
                            std::uint8_t* out) {
  const std::size_t stride = static_cast<std::size_t>(width) * 3;
  for (int y = 0; y < t.out_size; ++y) {
    const std::int32_t* k = &t.k[static_cast<std::size_t>(y) * t.ksize];
    const std::uint8_t* src = in + stride * (t.first[y] - row0);
    const int n = t.count[y];
    std::uint8_t* dst = out + stride * y;
    std::size_t i = 0;
    for (; i + 8 <= stride; i += 8) {
      __m256i s = _mm256_set1_epi32(kHalf);
      const std::uint8_t* p = src + i;
      for (int j = 0; j < n; ++j, p += stride) {
        const __m256i v =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        s = _mm256_add_epi32(s, _mm256_mullo_epi32(v, _mm256_set1_epi32(k[j])));
      }
      s = _mm256_srai_epi32(s, kPrecisionBits);
      // Saturating packs to int16 then uint8 clamp to [0, 255], as clip8 does.
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
      const __m128i b = _mm_packus_epi16(w, w);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), b);
    }
    for (; i < stride; ++i) {
      std::int32_t s = kHalf;
      for (int j = 0; j < n; ++j) s += src[stride * j + i] * k[j];
      dst[i] = clip8(s);
    }
  }
}
#endif

void resample_vertical(const std::uint8_t* in, int width, int row0, const Taps& t,
                       std::uint8_t* out) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return resample_vertical_avx2(in, width, row0, t, out);
#endif
  resample_vertical_portable(in, width, row0, t, out);
}

}  // namespace

RgbImage resize_bicubic(const RgbImage& in, int width, int height) {
  if (width <= 0 || height <= 0) {
    throw Error::bad_input("resize to an empty size " + std::to_string(width) + "x" +
                std::to_string(height) + " requested; give a positive width and height");
  }
  if (in.width <= 0 || in.height <= 0 ||
      in.pixels.size() != static_cast<std::size_t>(in.width) * in.height * 3) {
    throw Error::bad_input("resize of an empty or inconsistent image (" + std::to_string(in.width) + "x" +
                std::to_string(in.height) + ", " + std::to_string(in.pixels.size()) +
                " bytes); decode it with decode_to_rgb first");
  }
  if (in.width == width && in.height == height) return in;  // Pillow returns a copy

  const bool need_h = width != in.width;
  const bool need_v = height != in.height;
  const Taps& tv = taps_for(in.height, height);
  // Taps may be evicted by the next taps_for call on this thread; copy what is needed first.
  const int row_first = tv.first[0];
  const int row_last = tv.first[height - 1] + tv.count[height - 1];

  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<std::size_t>(width) * height * 3);

  if (!need_v) {  // horizontal only
    resample_horizontal(in.pixels.data(), in.width, 0, in.height, taps_for(in.width, width),
                        out.pixels.data());
    return out;
  }
  if (!need_h) {  // vertical only
    resample_vertical(in.pixels.data(), in.width, 0, tv, out.pixels.data());
    return out;
  }
  // Both: horizontal over only the rows the vertical pass reads, as Pillow does.
  const int rows = row_last - row_first;
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(width) * rows * 3);
  const Taps& th = taps_for(in.width, width);
  resample_horizontal(in.pixels.data(), in.width, row_first, rows, th, tmp.data());
  const Taps& tv2 = taps_for(in.height, height);  // still cached (4 slots), or recomputed
  resample_vertical(tmp.data(), width, row_first, tv2, out.pixels.data());
  return out;
}

void to_chw_normalized(const RgbImage& in, float* out) {
  // float32 division then subtraction: the two roundings numpy makes for x / 127.5 - 1.0 on a
  // float32 array (Keras: x /= 127.5; x -= 1.). Only 256 inputs exist, so they are tabulated.
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 127.5f - 1.0f;
    return t;
  }();
  const std::size_t plane = static_cast<std::size_t>(in.width) * in.height;
  const std::uint8_t* p = in.pixels.data();
  float* r = out;
  float* g = out + plane;
  float* b = out + 2 * plane;
  for (std::size_t i = 0; i < plane; ++i, p += 3) {
    r[i] = table[p[0]];
    g[i] = table[p[1]];
    b[i] = table[p[2]];
  }
}

}  // namespace orchard::image
