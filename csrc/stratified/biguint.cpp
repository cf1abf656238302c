// Schoolbook arithmetic for BigUInt (see biguint.h). Every loop is bounded by the operands' limb
// counts; carries are carried in uint64_t, where (2^32-1)^2 + 2 (2^32-1) = 2^64 - 1 never overflows.
#include "stratified/biguint.h"

#include <algorithm>
#include <stdexcept>

namespace fastcert {

namespace {
constexpr uint64_t kBase = uint64_t(1) << 32;
constexpr BigUInt::Limb kDecChunk = 1000000000u;  // 10^9: the largest power of ten below 2^32
}  // namespace

BigUInt::BigUInt(uint64_t v) {
  while (v != 0) {
    limbs_.push_back(Limb(v));
    v >>= 32;
  }
}

BigUInt BigUInt::from_bytes_le(const uint8_t* data, size_t n) {
  BigUInt r;
  if (n == 0) return r;
  if (data == nullptr) throw std::invalid_argument("BigUInt::from_bytes_le: null data");
  r.limbs_.assign((n + 3) / 4, 0);
  for (size_t i = 0; i < n; ++i) r.limbs_[i / 4] |= Limb(data[i]) << (8 * (i % 4));
  r.trim();
  return r;
}

std::vector<uint8_t> BigUInt::to_bytes_le() const {
  std::vector<uint8_t> out(limbs_.size() * 4);
  for (size_t i = 0; i < limbs_.size(); ++i)
    for (size_t k = 0; k < 4; ++k) out[4 * i + k] = uint8_t(limbs_[i] >> (8 * k));
  while (!out.empty() && out.back() == 0) out.pop_back();
  return out;
}

BigUInt BigUInt::from_decimal(const std::string& s) {
  if (s.empty()) throw std::invalid_argument("BigUInt::from_decimal: empty string");
  BigUInt r;
  for (char ch : s) {
    if (ch < '0' || ch > '9') throw std::invalid_argument("BigUInt::from_decimal: not a decimal digit");
    r.mul_small(10);
    r += BigUInt(uint64_t(ch - '0'));
  }
  return r;
}

std::string BigUInt::to_decimal() const {
  if (is_zero()) return "0";
  BigUInt t = *this;
  std::vector<Limb> chunks;  // base-10^9 digits, least significant first
  while (!t.is_zero()) chunks.push_back(t.divmod_small(kDecChunk));
  std::string s = std::to_string(chunks.back());
  for (size_t i = chunks.size() - 1; i-- > 0;) {
    std::string part = std::to_string(chunks[i]);
    s.append(9 - part.size(), '0');
    s += part;
  }
  return s;
}

size_t BigUInt::bit_length() const {
  if (limbs_.empty()) return 0;
  size_t bits = 32 * (limbs_.size() - 1);
  Limb top = limbs_.back();
  while (top != 0) {
    ++bits;
    top >>= 1;
  }
  return bits;
}

uint64_t BigUInt::to_u64() const {
  if (limbs_.size() > 2) throw std::overflow_error("BigUInt::to_u64: value does not fit in 64 bits");
  uint64_t v = 0;
  for (size_t i = limbs_.size(); i-- > 0;) v = (v << 32) | limbs_[i];
  return v;
}

BigUInt& BigUInt::operator+=(const BigUInt& o) {
  const size_t n = o.limbs_.size();
  if (limbs_.size() < n) limbs_.resize(n, 0);
  uint64_t carry = 0;
  size_t i = 0;
  for (; i < n; ++i) {  // reads o.limbs_[i] before writing limbs_[i]: safe when &o == this
    const uint64_t s = uint64_t(limbs_[i]) + o.limbs_[i] + carry;
    limbs_[i] = Limb(s);
    carry = s >> 32;
  }
  for (; carry != 0 && i < limbs_.size(); ++i) {
    const uint64_t s = uint64_t(limbs_[i]) + carry;
    limbs_[i] = Limb(s);
    carry = s >> 32;
  }
  if (carry != 0) limbs_.push_back(Limb(carry));
  return *this;
}

BigUInt& BigUInt::operator-=(const BigUInt& o) {
  if (compare(*this, o) < 0) throw std::domain_error("BigUInt: subtraction would be negative");
  uint64_t borrow = 0;
  size_t i = 0;
  for (; i < o.limbs_.size(); ++i) {
    const uint64_t sub = uint64_t(o.limbs_[i]) + borrow;
    const uint64_t cur = limbs_[i];
    limbs_[i] = Limb(cur - sub);  // modulo 2^32
    borrow = cur < sub ? 1 : 0;
  }
  for (; borrow != 0 && i < limbs_.size(); ++i) {
    const uint64_t cur = limbs_[i];
    limbs_[i] = Limb(cur - 1);
    borrow = cur == 0 ? 1 : 0;
  }
  trim();
  return *this;
}

BigUInt& BigUInt::mul_small(Limb m) {
  if (m == 0 || is_zero()) {
    limbs_.clear();
    return *this;
  }
  uint64_t carry = 0;
  for (Limb& l : limbs_) {
    const uint64_t t = uint64_t(l) * m + carry;
    l = Limb(t);
    carry = t >> 32;
  }
  if (carry != 0) limbs_.push_back(Limb(carry));
  return *this;
}

BigUInt& BigUInt::add_mul_small(const BigUInt& x, Limb m) {
  if (m == 0 || x.is_zero()) return *this;
  if (&x == this) {
    const BigUInt copy = x;
    return add_mul_small(copy, m);
  }
  const size_t n = x.limbs_.size();
  if (limbs_.size() < n + 1) limbs_.resize(n + 1, 0);
  uint64_t carry = 0;
  size_t i = 0;
  for (; i < n; ++i) {
    const uint64_t t = uint64_t(x.limbs_[i]) * m + limbs_[i] + carry;
    limbs_[i] = Limb(t);
    carry = t >> 32;
  }
  for (; carry != 0 && i < limbs_.size(); ++i) {
    const uint64_t t = uint64_t(limbs_[i]) + carry;
    limbs_[i] = Limb(t);
    carry = t >> 32;
  }
  if (carry != 0) limbs_.push_back(Limb(carry));
  trim();
  return *this;
}

BigUInt operator*(const BigUInt& a, const BigUInt& b) {
  BigUInt r;
  if (a.is_zero() || b.is_zero()) return r;
  if (b.limbs_.size() == 1) return r.add_mul_small(a, b.limbs_[0]);
  if (a.limbs_.size() == 1) return r.add_mul_small(b, a.limbs_[0]);
  const size_t na = a.limbs_.size(), nb = b.limbs_.size();
  r.limbs_.assign(na + nb, 0);
  for (size_t i = 0; i < na; ++i) {
    const uint64_t ai = a.limbs_[i];
    uint64_t carry = 0;
    for (size_t j = 0; j < nb; ++j) {
      const uint64_t t = ai * b.limbs_[j] + r.limbs_[i + j] + carry;
      r.limbs_[i + j] = BigUInt::Limb(t);
      carry = t >> 32;
    }
    r.limbs_[i + nb] = BigUInt::Limb(carry);  // this slot is still zero at step i
  }
  r.trim();
  return r;
}

BigUInt& BigUInt::operator*=(const BigUInt& o) {
  *this = *this * o;
  return *this;
}

BigUInt& BigUInt::add_mul(const BigUInt& x, const BigUInt& y) {
  if (x.is_zero() || y.is_zero()) return *this;
  if (y.limbs_.size() == 1) return add_mul_small(x, y.limbs_[0]);
  if (x.limbs_.size() == 1) return add_mul_small(y, x.limbs_[0]);
  return *this += x * y;
}

BigUInt::Limb BigUInt::divmod_small(Limb d) {
  if (d == 0) throw std::domain_error("BigUInt: division by zero");
  uint64_t rem = 0;
  for (size_t i = limbs_.size(); i-- > 0;) {
    const uint64_t cur = (rem << 32) | limbs_[i];  // rem < d < 2^32, so this fits
    limbs_[i] = Limb(cur / d);
    rem = cur % d;
  }
  trim();
  return Limb(rem);
}

BigUInt BigUInt::pow(const BigUInt& base, uint32_t e) {
  BigUInt result(1), b = base;
  while (e != 0) {
    if (e & 1u) result *= b;
    e >>= 1;
    if (e != 0) b *= b;
  }
  return result;
}

int compare(const BigUInt& a, const BigUInt& b) {
  if (a.limbs_.size() != b.limbs_.size()) return a.limbs_.size() < b.limbs_.size() ? -1 : 1;
  for (size_t i = a.limbs_.size(); i-- > 0;)
    if (a.limbs_[i] != b.limbs_[i]) return a.limbs_[i] < b.limbs_[i] ? -1 : 1;
  return 0;
}

static_assert(kBase == 4294967296ull, "limbs are 32-bit");

}  // namespace fastcert
