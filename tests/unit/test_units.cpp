// Unit tests of the readers' building blocks on hand-made bytes.
#include <gtest/gtest.h>

#include <torch/nn/module.h>

#include <filesystem>
#include <fstream>

#include "../common/fixtures.h"
#include "models/architectures.h"
#include "models/classifier.h"
#include "models/labels.h"
#include "models/pickle.h"
#include "models/registry.h"

namespace ptm::test {
namespace {

// A string literal with embedded NULs, whole.
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}

pickle::Ref unpickle(const std::string& bytes) {
  return pickle::load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr, "test");
}

std::string error_of(const std::string& bytes) {
  try {
    unpickle(bytes);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(Pickle, OneKeyDictWithSetitem) {
  // {'a': 5} as protocol 2 writes it: EMPTY_DICT BINPUT BINUNICODE BININT1 SETITEM STOP
  auto v = unpickle(B("\x80\x02}q\x00X\x01\x00\x00\x00" "aK\x05s."));
  ASSERT_TRUE(v->is(pickle::Value::Kind::Dict));
  ASSERT_EQ(v->dict.size(), 1u);
  EXPECT_EQ(v->dict[0].first->s, "a");
  EXPECT_EQ(v->dict[0].second->i, 5);
}

TEST(Pickle, OrderedDictAndMemo) {
  // OrderedDict() with two items, the second value fetched from the memo.
  std::string p = B("\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00xK\x07q\x02X\x01\x00\x00\x00yh\x02u.");
  auto v = unpickle(p);
  ASSERT_TRUE(v->is(pickle::Value::Kind::Dict));
  ASSERT_EQ(v->dict.size(), 2u);
  EXPECT_EQ(v->dict[1].second->i, 7);
}

TEST(Pickle, ForbiddenGlobalsAreNamed) {
  EXPECT_NE(error_of(B("\x80\x02" "cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.")), "");
  EXPECT_NE(error_of("\x80\x02" "cposix\nsystem\n.").find("'posix.system'"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02" "cbuiltins\neval\n.").find("'builtins.eval'"), std::string::npos);
  // STACK_GLOBAL form
  std::string sg = "\x80\x04\x8c\x02os\x8c\x06system\x93.";
  EXPECT_NE(error_of(sg).find("'os.system'"), std::string::npos);
}

TEST(Pickle, RebuildFromTypeOnlyWrapsAllowedCalls) {
  // _rebuild_from_type_v2(posix.system, Tensor, ('ls',), {}): the inner
  // global is refused when it is read.
  EXPECT_NE(error_of("\x80\x02" "ctorch._utils\n_rebuild_from_type_v2\n" "cposix\nsystem\n."), "");
  // ...(collections.OrderedDict, builtins.dict, (), {}): not a tensor type.
  std::string p = B("\x80\x02" "ctorch._utils\n_rebuild_from_type_v2\n(ccollections\nOrderedDict\n"
                    "ccollections\nOrderedDict\n)}tR.");
  EXPECT_NE(error_of(p).find("unsupported type"), std::string::npos) << error_of(p);
  // A tensor type is a marker, never called.
  EXPECT_NE(error_of("\x80\x02" "ctorch.nn.parameter\nParameter\n)R.").find("refusing to construct"), std::string::npos);
}

TEST(Pickle, MalformedStreamsFail) {
  EXPECT_NE(error_of(""), "");
  EXPECT_NE(error_of("\x80\x02"), "");                             // no STOP
  EXPECT_NE(error_of("\x80\x02s."), "");                           // SETITEM on an empty stack
  EXPECT_NE(error_of("\x80\x02h\x05."), "");                       // memo miss
  EXPECT_NE(error_of("\x80\x02X\xff\xff\xff\xff."), "");           // length past the end
  EXPECT_NE(error_of(std::string("\x80\x02\xff.", 4)), "");        // unknown opcode
  EXPECT_NE(error_of("\x80\x02K\x01K\x02s."), "");                 // SETITEM on an int
  std::string deep = "\x80\x02";
  for (int i = 0; i < 400; ++i) deep += "]";
  for (int i = 0; i < 399; ++i) deep += "a";
  deep += ".";
  EXPECT_NE(error_of(deep).find("nested"), std::string::npos);
}

TEST(Labels, ImageNetMatchesTorchvision) {
  std::ifstream in(fixture("imagenet_labels.json"));
  auto want = nlohmann::json::parse(in).get<std::vector<std::string>>();
  EXPECT_EQ(imagenet_labels(), want);
}

TEST(Labels, FileReader) {
  auto path = std::filesystem::temp_directory_path() / "ptm-labels.txt";
  std::ofstream(path) << "cat\r\n  dog \n\nbird\n\n";
  auto l = read_labels_file(path.string());
  EXPECT_EQ(l, (std::vector<std::string>{"cat", "dog", "", "bird"}));
  std::ofstream(path, std::ios::trunc) << "\n\n";
  EXPECT_THROW(read_labels_file(path.string()), ModelError);
  EXPECT_THROW(read_labels_file("/nonexistent"), ModelError);
}

TEST(TopK, OrderAndTies) {
  const float s[] = {0.1f, 0.7f, 0.7f, 0.05f, 0.9f};
  auto t = top_k(s, 5, 3);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].index, 4);
  EXPECT_EQ(t[1].index, 1);
  EXPECT_EQ(t[2].index, 2);
  EXPECT_EQ(top_k(s, 5, 10).size(), 5u);
  float p[] = {1.f, 2.f, 3.f};
  softmax_inplace(p, 3);
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-6);
  EXPECT_GT(p[2], p[1]);
}

TEST(Registry, EveryNameBuildsAndHasAHead) {
  for (const auto& a : architectures()) {
    if (a.family == "vgg" && a.name != "vgg11") continue;  // large; parity covers them
    auto m = create_architecture(a.name, 7);
    auto params = m->named_parameters();
    ASSERT_TRUE(params.contains(a.head + ".weight")) << a.name;
    EXPECT_EQ(params[a.head + ".weight"].size(0), 7) << a.name;
    at::NoGradGuard ng;
    at::Tensor y = m->forward(at::zeros({1, 3, 64, 64}));
    EXPECT_EQ(y.sizes(), (at::IntArrayRef{1, 7})) << a.name;
  }
  EXPECT_THROW(create_architecture("resnet9000", 10), ModelError);
  EXPECT_THROW(create_architecture("resnet18", 0), ModelError);
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
