// Driver for tests/python/test_glvq_math.py: runs one piece of GLVQ's math
// (lcd/quantizer/glvq.h) on inputs given as JSON on stdin and prints what it
// computed as JSON on stdout, for comparison with numpy / torch float64.
//
//   {"op": "babai", "g": [d*d], "d": d, "n": n, "bits": b, "u": [[n]...]}  -> {"z": [[n]...]}
//   {"op": "compand", "x": [...], "mu": mu}             -> {"f": F(x), "back": Finv(F(x))}
//   {"op": "cholesky", "a": [d*d], "d": d}              -> {"l": [d*d]}
//   {"op": "clamp_sv", "g": [d*d], "d": d, "lo", "hi"}  -> {"g": [d*d], "sv": singular values of the result}
//   {"op": "initial_mu", "x": [...]}                    -> {"mu": mu0}
//   {"op": "allocate", "salience", "len", "group_size", "bits"} -> {"bits": [...]}
//   {"op": "loss", "rows", "len", "d", "bits", "w" [rows*len], "h" [len*len] or null,
//    "scales" [rows], "z" [rows*len], "g" [d*d], "g0" [d*d], "mu", "lambda"}
//                                                       -> {"loss", "data", "grad_g", "grad_mu"}
//   {"op": "quantize", "w" [rows*cols], "rows", "cols", "h" [cols*cols] or null,
//    "bits", "group_size", "dim", "steps"}
//       -> {"codes" [rows*cols] (canonical codes q), "scales" [rows*groups], "lattice" [groups*(d*d+1)],
//           "group_bits", "loss_init", "loss_final"}
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "lcd/kernels/dtype.h"
#include "lcd/kernels/quant_linear.h"
#include "lcd/quantizer/glvq.h"
#include "nlohmann/json.hpp"

using json = nlohmann::json;
namespace glvq = lcd::quantizer::glvq;

int Fail(const std::string& msg) {
  std::cerr << msg << "\n";
  return 1;
}

int main() {
  const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  const json in = json::parse(text);
  const std::string op = in.at("op");
  json out;
  if (op == "babai") {
    const int d = in.at("d"), n = in.at("n"), bits = in.at("bits");
    const std::vector<double> g = in.at("g");
    auto inv = glvq::InverseLeading(g, d, n);
    if (!inv.ok()) return Fail(std::string(inv.status().message()));
    json zs = json::array();
    for (const auto& uj : in.at("u")) {
      const std::vector<double> u = uj;
      std::vector<int> z(n);
      glvq::BabaiRound(inv->data(), n, u.data(), bits, z.data());
      zs.push_back(z);
    }
    out["z"] = zs;
  } else if (op == "compand") {
    const double mu = in.at("mu");
    std::vector<double> f, back;
    for (double x : in.at("x").get<std::vector<double>>()) {
      f.push_back(glvq::Compand(x, mu));
      back.push_back(glvq::Expand(f.back(), mu));
    }
    out["f"] = f;
    out["back"] = back;
  } else if (op == "cholesky") {
    auto l = glvq::Cholesky(in.at("a").get<std::vector<double>>(), in.at("d"));
    if (!l.ok()) return Fail(std::string(l.status().message()));
    out["l"] = *l;
  } else if (op == "clamp_sv") {
    std::vector<double> g = in.at("g");
    const int d = in.at("d");
    glvq::ClampSingularValues(g.data(), d, in.at("lo"), in.at("hi"));
    out["g"] = g;
    out["sv"] = glvq::SingularValues(g.data(), d);
  } else if (op == "initial_mu") {
    const std::vector<float> x = in.at("x");
    out["mu"] = glvq::InitialMu(x.data(), static_cast<int64_t>(x.size()));
  } else if (op == "allocate") {
    const std::vector<uint8_t> b = glvq::AllocateBits(in.at("salience"), in.at("len"), in.at("group_size"), in.at("bits"));
    out["bits"] = std::vector<int>(b.begin(), b.end());
  } else if (op == "loss") {
    glvq::GroupProblem p;
    p.rows = in.at("rows");
    p.len = in.at("len");
    p.stride = p.len;
    p.d = in.at("d");
    p.bits = in.at("bits");
    const std::vector<float> w = in.at("w");
    std::vector<double> h;
    if (!in.at("h").is_null()) h = in.at("h").get<std::vector<double>>();
    const std::vector<double> scales = in.at("scales"), g = in.at("g"), g0 = in.at("g0");
    const std::vector<int> z = in.at("z");
    p.w = w.data();
    p.h = h.empty() ? nullptr : h.data();
    p.scales = scales.data();
    p.z = z.data();
    p.g0 = g0.data();
    p.lambda = in.at("lambda");
    std::vector<double> grad(g.size());
    double gmu = 0, data = 0;
    out["loss"] = glvq::GroupLoss(p, g.data(), in.at("mu"), grad.data(), &gmu, &data);
    out["data"] = data;
    out["grad_g"] = grad;
    out["grad_mu"] = gmu;
  } else if (op == "quantize") {
    const std::vector<float> w = in.at("w");
    const int64_t rows = in.at("rows"), cols = in.at("cols");
    std::vector<double> h;
    if (!in.at("h").is_null()) h = in.at("h").get<std::vector<double>>();
    lcd::quantizer::GlvqOptions o;
    o.bits = in.at("bits");
    o.group_size = in.at("group_size");
    o.dim = in.at("dim");
    o.steps = in.at("steps");
    lcd::quantizer::GlvqReport rep;
    auto q = lcd::quantizer::QuantizeGlvq(w.data(), rows, cols, h.empty() ? nullptr : h.data(), o, &rep);
    if (!q.ok()) return Fail(std::string(q.status().message()));
    std::vector<int> codes;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) codes.push_back(lcd::kernels::CanonicalCode(q->view(), r, c));
    }
    std::vector<double> scales, lattice;
    for (uint16_t v : q->params) scales.push_back(lcd::kernels::Fp16ToFloat(v));
    for (uint16_t v : q->lattice) lattice.push_back(lcd::kernels::Fp16ToFloat(v));
    out["codes"] = codes;
    out["scales"] = scales;
    out["lattice"] = lattice;
    std::vector<int> gb;
    for (int64_t k = 0; k < q->layout.groups(); ++k) gb.push_back(q->layout.GroupBits(k));
    out["group_bits"] = gb;
    out["loss_init"] = rep.loss_init;
    out["loss_final"] = rep.loss_final;
  } else {
    return Fail("unknown op " + op);
  }
  std::cout << out.dump() << "\n";
  return 0;
}
