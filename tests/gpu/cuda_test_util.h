#pragma once

// Shared setup of the device-op and device-model tests: a fixture that skips without a device
// and owns one stream, allocator and GEMM; uploads (rounding to bf16 where the device stores bf16,
// so references see the exact inputs) and downloads. Test-only code.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/half.h"

namespace tandem::kernels::cuda::testing {

// Members are public so test helpers outside the fixture can upload and download through it.
class CudaFixture : public ::testing::Test {
public:
    void SetUp() override {
        std::string why;
        if (cuda_devices(&why).empty()) GTEST_SKIP() << why;
        auto stream = Stream::create(0);
        ASSERT_TRUE(stream.ok()) << stream.status().to_string();
        stream_ = std::move(*stream);
        auto alloc = DeviceAllocator::create(0);
        ASSERT_TRUE(alloc.ok()) << alloc.status().to_string();
        alloc_ = std::move(*alloc);
        auto gemm = Gemm::create(*alloc_);
        ASSERT_TRUE(gemm.ok()) << gemm.status().to_string();
        gemm_ = std::move(*gemm);
        std::printf("gemm backend: %s\n", gemm_->description().c_str());
    }
    void TearDown() override {
        if (stream_) {
            EXPECT_TRUE(stream_->synchronize("test teardown").ok());
        }
        buffers_.clear();
        gemm_.reset();
        alloc_.reset();
        stream_.reset();
    }

    const Stream& s() const { return *stream_; }

    // A device buffer owned by the fixture.
    template <typename T>
    T* device(size_t count) {
        auto b = alloc_->allocate(count * sizeof(T), "test buffer");
        EXPECT_TRUE(b.ok()) << b.status().to_string();
        if (!b.ok()) return nullptr;
        buffers_.push_back(std::move(*b));
        return buffers_.back().as<T>();
    }
    template <typename T>
    T* upload(const std::vector<T>& host) {
        T* d = device<T>(host.size());
        EXPECT_TRUE(copy_to_device(s(), d, host.data(), host.size() * sizeof(T)).ok());
        return d;
    }
    // Rounds `values` to bf16 in place and uploads the bits.
    Bf16* upload_bf16(std::vector<float>& values) {
        const std::vector<uint16_t> bits = round_to_16bit(values, true);
        Bf16* d = device<Bf16>(values.size());
        EXPECT_TRUE(copy_to_device(s(), d, bits.data(), bits.size() * 2).ok());
        return d;
    }
    template <typename T>
    std::vector<T> download(const T* d, size_t count) {
        std::vector<T> out(count);
        EXPECT_TRUE(copy_to_host(s(), out.data(), d, count * sizeof(T)).ok());
        EXPECT_TRUE(s().synchronize("test download").ok());
        return out;
    }
    std::vector<float> download_bf16(const Bf16* d, size_t count) {
        const std::vector<uint16_t> bits = download(reinterpret_cast<const uint16_t*>(d), count);
        std::vector<float> out(count);
        for (size_t i = 0; i < count; ++i) out[i] = bf16_bits_to_float(bits[i]);
        return out;
    }

    std::unique_ptr<Stream> stream_;
    std::unique_ptr<DeviceAllocator> alloc_;
    std::unique_ptr<Gemm> gemm_;
    std::vector<DeviceBuffer> buffers_;
};

}  // namespace tandem::kernels::cuda::testing
