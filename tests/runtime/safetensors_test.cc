#include "lcd/runtime/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lcd::runtime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string SourceDir() {
  // CTest sets LCD_SOURCE_DIR; run by hand, find the tree from this file.
  const char* d = std::getenv("LCD_SOURCE_DIR");
  return d != nullptr ? std::string(d)
                      : fs::path(__FILE__).parent_path().parent_path().parent_path().string();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "lcd_st_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file image: u64 LE length, header, then `data_size` non-zero bytes.
std::string Image(const std::string& header, size_t data_size) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  for (size_t i = 0; i < data_size; ++i) out.push_back(static_cast<char>(0x5a + i));
  return out;
}

float HalfToFloat(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  float v = exp == 0 ? std::ldexp(static_cast<float>(mant), -24)
                     : std::ldexp(static_cast<float>(mant | 0x400), exp - 25);
  return (h & 0x8000) ? -v : v;
}

float Bf16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename T>
std::vector<T> Values(const SafetensorsFile& f, const TensorInfo& t) {
  std::vector<T> out((t.end - t.begin) / sizeof(T));
  std::memcpy(out.data(), f.Data(t), t.end - t.begin);
  return out;
}

TEST(SafetensorsTest, DTypeTable) {
  EXPECT_EQ(StDTypeName(StDType::kBF16), "BF16");
  EXPECT_EQ(StDTypeName(StDType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(StDTypeSize(StDType::kF64), 8u);
  EXPECT_EQ(StDTypeSize(StDType::kBool), 1u);
  EXPECT_EQ(*ToKernelDType(StDType::kF16), kernels::DType::kF16);
  EXPECT_EQ(*ToKernelDType(StDType::kBF16), kernels::DType::kBF16);
  EXPECT_EQ(*ToKernelDType(StDType::kF32), kernels::DType::kF32);
  EXPECT_EQ(ToKernelDType(StDType::kI8).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, RoundTripRandomTensorsOfEveryFloatDType) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  struct Spec {
    std::string name;
    StDType dtype;
    std::vector<int64_t> shape;
  };
  // Mixed element sizes in an order that would misalign if written as given.
  const std::vector<Spec> specs = {
      {"a.bf16", StDType::kBF16, {3, 5}}, {"b.f32", StDType::kF32, {7, 3}},
      {"c.f16", StDType::kF16, {1, 9}},   {"d.f64", StDType::kF64, {4}},
      {"e.u8", StDType::kU8, {13}},       {"f.f8", StDType::kF8E4M3, {2, 2}},
      {"g.i64", StDType::kI64, {2}},      {"h.empty", StDType::kF32, {0, 4}},
      {"i.scalar", StDType::kF32, {}},
  };
  std::vector<std::string> payloads;
  std::vector<TensorToWrite> tensors;
  for (const Spec& s : specs) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    std::string bytes(n * StDTypeSize(s.dtype), '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
    payloads.push_back(std::move(bytes));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    tensors.push_back({specs[i].name, specs[i].dtype, specs[i].shape, payloads[i]});
  }
  TempDir dir;
  const std::string path = dir.File("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"k", "v\"quoted\""}}).ok());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("k"), "v\"quoted\"");
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorInfo* t = f.Find(specs[i].name);
    ASSERT_NE(t, nullptr) << specs[i].name;
    EXPECT_EQ(t->dtype, specs[i].dtype);
    EXPECT_EQ(t->shape, specs[i].shape);
    EXPECT_EQ(t->end - t->begin, payloads[i].size());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.Data(*t)), payloads[i].size()),
              payloads[i]);
    // Every tensor is aligned to its element size within the file.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.Data(*t)) % StDTypeSize(t->dtype), 0u) << t->name;
  }
  EXPECT_EQ(f.Find("missing"), nullptr);
  EXPECT_EQ(f.Find("i.scalar")->num_elements(), 1);
  EXPECT_EQ(f.Find("h.empty")->num_elements(), 0);

  // The in-memory parser agrees with the mapped reader.
  auto header = ParseSafetensorsBuffer(ReadAll(path));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    EXPECT_EQ(header->tensors[i].name, f.tensors()[i].name);
    EXPECT_EQ(header->tensors[i].begin, f.tensors()[i].begin);
  }
}

TEST(SafetensorsTest, ReadsFileWrittenByPythonPackage) {
  const std::string path = SourceDir() + "/tests/testdata/safetensors/python_written.safetensors";
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "lcd fixture");
  EXPECT_EQ(f.tensors().size(), 10u);
  // Sorted by offset.
  for (size_t i = 1; i < f.tensors().size(); ++i) {
    EXPECT_EQ(f.tensors()[i].begin, f.tensors()[i - 1].end);
  }

  const TensorInfo* t = f.Find("w.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3, 4}));
  auto f32 = Values<float>(f, *t);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f32[i], (i - 11.0f) * 0.375f) << i;

  t = f.Find("w.f16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kF16);
  auto f16 = Values<uint16_t>(f, *t);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(HalfToFloat(f16[i]), (i - 5.0f) * 0.125f) << i;

  t = f.Find("w.bf16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kBF16);
  auto bf16 = Values<uint16_t>(f, *t);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Bf16ToFloat(bf16[i]), (i - 3.0f) * 2.5f) << i;

  t = f.Find("w.f64");
  ASSERT_NE(t, nullptr);
  auto f64 = Values<double>(f, *t);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f64[i], (i - 2.0) / 3.0) << i;

  t = f.Find("idx.u8");
  ASSERT_NE(t, nullptr);
  auto u8 = Values<uint8_t>(f, *t);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(u8[i], (i * 13) % 256) << i;

  t = f.Find("idx.i8");
  ASSERT_NE(t, nullptr);
  auto i8 = Values<int8_t>(f, *t);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(i8[i], i * 17 - 60) << i;

  t = f.Find("idx.i32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{3, 2}));
  auto i32 = Values<int32_t>(f, *t);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(i32[i], i * 100000 - 250000) << i;

  t = f.Find("idx.i64");
  ASSERT_NE(t, nullptr);
  auto i64 = Values<int64_t>(f, *t);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(i64[i], i * 1000000000000LL - 7) << i;

  t = f.Find("empty");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(t->begin, t->end);

  t = f.Find("scalar");
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->shape.empty());
  EXPECT_EQ(Values<float>(f, *t)[0], 1.5f);
}

TEST(SafetensorsTest, OpenErrors) {
  TempDir dir;
  EXPECT_EQ(SafetensorsFile::Open(dir.File("nope")).status().code(), absl::StatusCode::kNotFound);
  { std::ofstream(dir.File("empty")); }
  auto empty = SafetensorsFile::Open(dir.File("empty"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr(dir.File("empty")));
  {
    std::ofstream out(dir.File("trunc"), std::ios::binary);
    const std::string img = Image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16);
    out << img.substr(0, img.size() - 3);
  }
  EXPECT_EQ(SafetensorsFile::Open(dir.File("trunc")).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(SafetensorsFile::Open(dir.File("")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.File("w.safetensors");
  std::string four(4, 'x');
  EXPECT_EQ(WriteSafetensors(path, {{"a", StDType::kF32, {2}, four}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      WriteSafetensors(path, {{"a", StDType::kF32, {1}, four}, {"a", StDType::kF32, {1}, four}})
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"__metadata__", StDType::kF32, {1}, four}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"a", StDType::kF32, {-1}, four}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path, {{"a", StDType::kF32, {int64_t{1} << 62, 8}, four}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_FALSE(WriteSafetensors(dir.File("no/such/dir/x"), {}).ok());
  // An empty file is valid.
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->tensors().empty());
}

struct BadCase {
  const char* what;
  std::string image;
  absl::StatusCode code;
  const char* message;  // Expected substring of the error.
};

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string Prefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

TEST(SafetensorsTest, MalformedInputsGiveErrors) {
  using C = absl::StatusCode;
  const std::string f32x2 = R"("dtype":"F32","shape":[2],"data_offsets":)";
  const std::vector<BadCase> cases = {
      {"empty file", "", C::kDataLoss, "shorter than the 8-byte"},
      {"truncated prefix", std::string(5, '\x01'), C::kDataLoss, "shorter than the 8-byte"},
      {"header longer than file", Prefix(100) + "{}", C::kDataLoss, "exceeds"},
      {"header length over limit", Prefix(1ull << 62) + "{}", C::kInvalidArgument, "limit"},
      {"header length max u64", Prefix(~0ull), C::kInvalidArgument, "limit"},
      {"empty header", Image("", 0), C::kInvalidArgument, "invalid JSON"},
      {"not json", Image("hello", 0), C::kInvalidArgument, "invalid JSON"},
      {"truncated json", Image(R"({"a":{"dtype":)", 0), C::kInvalidArgument, "invalid JSON"},
      {"json array", Image("[1,2]", 0), C::kInvalidArgument, "must be a JSON object"},
      {"json string", Image("\"x\"", 0), C::kInvalidArgument, "must be a JSON object"},
      {"invalid utf8", Image("{\"\xff\xfe\":1}", 0), C::kInvalidArgument, "invalid JSON"},
      {"entry not object", Image(R"({"a":[1]})", 0), C::kInvalidArgument, "\"a\""},
      {"unknown dtype", Image(R"({"a":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}})", 1),
       C::kInvalidArgument, "unknown dtype \"F7\""},
      {"dtype not string", Image(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
       C::kInvalidArgument, "dtype"},
      {"negative shape", Image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0),
       C::kInvalidArgument, "non-negative integer"},
      {"float shape", Image(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
       C::kInvalidArgument, "non-negative integer"},
      {"bool shape", Image(R"({"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}})", 4),
       C::kInvalidArgument, "non-negative integer"},
      {"shape not array", Image(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})", 16),
       C::kInvalidArgument, "shape must be an array"},
      {"huge shape entry",
       Image(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,1]}})", 1),
       C::kInvalidArgument, "too large"},
      {"shape product overflows",
       Image(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
       C::kInvalidArgument, "overflows"},
      {"byte size overflows",
       Image(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
       C::kInvalidArgument, "overflows"},
      {"rank too high",
       Image(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1),
       C::kInvalidArgument, "rank 9"},
      {"numel mismatch", Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       C::kInvalidArgument, "needs 12"},
      {"offsets reversed", Image(R"({"a":{)" + f32x2 + R"([8,0]}})", 8), C::kInvalidArgument,
       "end before begin"},
      {"offsets not pair", Image(R"({"a":{)" + f32x2 + R"([0]}})", 8), C::kInvalidArgument,
       "two integers"},
      {"negative offset", Image(R"({"a":{)" + f32x2 + R"([-8,0]}})", 8), C::kInvalidArgument,
       "data_offsets[0]"},
      {"offsets out of bounds", Image(R"({"a":{)" + f32x2 + R"([0,8]}})", 4), C::kDataLoss,
       "\"a\" ends at byte 8"},
      {"huge offsets",
       Image(
           R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
           1),
       C::kInvalidArgument, "hole"},
      {"overlap", Image(R"({"a":{)" + f32x2 + R"([0,8]},"b":{)" + f32x2 + R"([4,12]}})", 12),
       C::kInvalidArgument, "overlaps"},
      {"hole", Image(R"({"a":{)" + f32x2 + R"([0,8]},"b":{)" + f32x2 + R"([12,20]}})", 20),
       C::kInvalidArgument, "hole"},
      {"leading hole", Image(R"({"a":{)" + f32x2 + R"([4,12]}})", 12), C::kInvalidArgument, "hole"},
      {"trailing bytes", Image(R"({"a":{)" + f32x2 + R"([0,8]}})", 12), C::kInvalidArgument,
       "cover 8"},
      {"data without tensors", Image("{}", 3), C::kInvalidArgument, "cover 0"},
      {"duplicate key", Image(R"({"a":{)" + f32x2 + R"([0,8]},"a":{)" + f32x2 + R"([8,16]}})", 16),
       C::kInvalidArgument, "duplicate key \"a\""},
      {"duplicate field",
       Image(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
       C::kInvalidArgument, "duplicate key \"dtype\""},
      {"missing field", Image(R"({"a":{"dtype":"F32","shape":[2]}})", 8), C::kInvalidArgument,
       "missing field \"data_offsets\""},
      {"extra field", Image(R"({"a":{)" + f32x2 + R"([0,8],"x":1}})", 8), C::kInvalidArgument,
       "unexpected field \"x\""},
      {"metadata non-string", Image(R"({"__metadata__":{"k":1}})", 0), C::kInvalidArgument,
       "\"k\" must be a string"},
      {"metadata not object", Image(R"({"__metadata__":"x"})", 0), C::kInvalidArgument,
       "__metadata__"},
      {"deep nesting", Image(R"({"__metadata__":)" + Nested(100000) + "}", 0), C::kInvalidArgument,
       "nests deeper"},
      {"deep nesting unbalanced", Image(std::string(1 << 16, '{'), 0), C::kInvalidArgument,
       "nests deeper"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.what);
    auto result = ParseSafetensorsBuffer(c.image);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), c.code) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(c.message));
  }
}

TEST(SafetensorsTest, LimitsAreEnforced) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  SafetensorsLimits limits;
  limits.max_tensors = 1;
  EXPECT_THAT(std::string(ParseSafetensorsBuffer(Image(header, 2), limits).status().message()),
              HasSubstr("more than 1 tensors"));
  limits = {};
  limits.max_header_bytes = 16;
  EXPECT_EQ(ParseSafetensorsBuffer(Image(header, 2), limits).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSafetensorsHeader(header, 2, limits).status().code(),
            absl::StatusCode::kInvalidArgument);
  limits = {};
  limits.max_rank = 0;
  EXPECT_THAT(std::string(ParseSafetensorsHeader(header, 2, limits).status().message()),
              HasSubstr("rank 1"));
}

TEST(SafetensorsTest, EdgeCasesThatAreValid) {
  // Zero-size tensors, several at the same offset, and a scalar.
  auto h =
      ParseSafetensorsBuffer(Image(R"({"z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                                   R"("z2":{"dtype":"BF16","shape":[3,0],"data_offsets":[0,0]},)"
                                   R"("s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
                                   R"("z3":{"dtype":"I8","shape":[0],"data_offsets":[8,8]}})"
                                   "   ",
                                   8));
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->tensors.size(), 4u);
  EXPECT_EQ(h->tensors[0].name, "z1");
  EXPECT_EQ(h->tensors[1].name, "z2");
  EXPECT_EQ(h->tensors[2].name, "s");
  EXPECT_EQ(h->tensors[3].name, "z3");
  EXPECT_EQ(h->tensors[1].num_elements(), 0);
  // Empty header and metadata only; null metadata.
  EXPECT_TRUE(ParseSafetensorsBuffer(Image("{}", 0)).ok());
  auto m = ParseSafetensorsBuffer(Image(R"({"__metadata__":{"a":"b","c":""}})", 0));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->metadata.size(), 2u);
  EXPECT_TRUE(ParseSafetensorsBuffer(Image(R"({"__metadata__":null})", 0)).ok());
  // Nesting at the limit is fine; brackets inside strings do not count.
  EXPECT_TRUE(
      ParseSafetensorsBuffer(
          Image(
              R"({"__metadata__":{"k":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}})",
              0))
          .ok());
  // Every dtype name parses.
  for (const char* dt : {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32",
                         "U64", "I64", "F64", "F8_E4M3", "F8_E5M2"}) {
    auto r = ParseSafetensorsHeader(
        std::string(R"({"t":{"dtype":")") + dt + R"(","shape":[0],"data_offsets":[0,0]}})", 0);
    EXPECT_TRUE(r.ok()) << dt << ": " << r.status();
    if (r.ok()) {
      EXPECT_EQ(StDTypeName(r->tensors[0].dtype), dt);
    }
  }
}

}  // namespace
}  // namespace lcd::runtime
