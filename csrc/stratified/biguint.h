// BigUInt: a small arbitrary-precision unsigned integer for the exact threshold computations of
// stratified discrete smoothing (Lee et al. 2019). Pure C++17, no GMP: the wheel must build where
// only a compiler is available.
//
// Representation: little-endian vector of 32-bit limbs, always normalized (no leading zero limb;
// zero is the empty vector). 32-bit limbs keep every partial product and carry inside uint64_t, so
// the code is portable standard C++ (no __int128). The numbers here are at most a few tens of
// thousands of bits and are multiplied by mostly one-limb factors, so schoolbook algorithms are the
// right tool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fastcert {

class BigUInt {
 public:
  using Limb = uint32_t;

  BigUInt() = default;
  BigUInt(uint64_t v);  // NOLINT(google-explicit-constructor): integers convert naturally

  // Little-endian bytes (Python's int.to_bytes(..., "little")). Leading zero bytes are allowed.
  static BigUInt from_bytes_le(const uint8_t* data, size_t n);
  std::vector<uint8_t> to_bytes_le() const;
  // Decimal digits only (no sign, no spaces); throws std::invalid_argument otherwise.
  static BigUInt from_decimal(const std::string& s);
  std::string to_decimal() const;

  bool is_zero() const { return limbs_.empty(); }
  size_t limb_count() const { return limbs_.size(); }
  size_t bit_length() const;
  // Value as uint64_t; throws std::overflow_error if it does not fit.
  uint64_t to_u64() const;

  BigUInt& operator+=(const BigUInt& o);
  // Throws std::domain_error if o > *this (unsigned type: no negative results).
  BigUInt& operator-=(const BigUInt& o);
  BigUInt& operator*=(const BigUInt& o);
  BigUInt& mul_small(Limb m);
  // *this += x * m (x may alias *this).
  BigUInt& add_mul_small(const BigUInt& x, Limb m);
  // *this += x * y, with a fast path when y (or x) fits in one limb.
  BigUInt& add_mul(const BigUInt& x, const BigUInt& y);
  // *this /= d; returns the remainder. Throws std::domain_error for d == 0.
  Limb divmod_small(Limb d);

  void set_zero() { limbs_.clear(); }
  static BigUInt pow(const BigUInt& base, uint32_t e);

  friend int compare(const BigUInt& a, const BigUInt& b);  // -1, 0, 1
  friend BigUInt operator+(BigUInt a, const BigUInt& b) { return a += b; }
  friend BigUInt operator-(BigUInt a, const BigUInt& b) { return a -= b; }
  friend BigUInt operator*(const BigUInt& a, const BigUInt& b);
  friend bool operator==(const BigUInt& a, const BigUInt& b) { return a.limbs_ == b.limbs_; }
  friend bool operator!=(const BigUInt& a, const BigUInt& b) { return !(a == b); }
  friend bool operator<(const BigUInt& a, const BigUInt& b) { return compare(a, b) < 0; }
  friend bool operator<=(const BigUInt& a, const BigUInt& b) { return compare(a, b) <= 0; }
  friend bool operator>(const BigUInt& a, const BigUInt& b) { return compare(a, b) > 0; }
  friend bool operator>=(const BigUInt& a, const BigUInt& b) { return compare(a, b) >= 0; }

 private:
  void trim() {
    while (!limbs_.empty() && limbs_.back() == 0) limbs_.pop_back();
  }
  std::vector<Limb> limbs_;
};

}  // namespace fastcert
