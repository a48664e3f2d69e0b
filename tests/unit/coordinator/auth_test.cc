// Auth (tokens, roles, the 0600 token file) and StateLock (one coordinator per state directory).
#include "coordinator/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/run_dir.h"
#include "coordinator/state_lock.h"

namespace tandem::coord {
namespace {

using ::testing::HasSubstr;

std::string temp_dir(const std::string& name) {
    const auto d = std::filesystem::temp_directory_path() /
                   fmt::format("tandem-auth-test-{}-{}", name, ::getpid());
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d.string();
}

HttpRequest with_auth(const std::string& authorization) {
    HttpRequest r;
    r.method = "GET";
    r.path = "/api/v1/jobs";
    r.authorization = authorization;
    return r;
}

TEST(Roles, AdminMayDoEverythingScrapeOnlyScrape) {
    for (Role need : {Role::kScrape, Role::kViewer, Role::kSubmitter, Role::kActor, Role::kAdmin})
        EXPECT_TRUE(role_allows(Role::kAdmin, need));
    EXPECT_TRUE(role_allows(Role::kScrape, Role::kScrape));
    EXPECT_FALSE(role_allows(Role::kScrape, Role::kViewer));
    EXPECT_TRUE(role_allows(Role::kViewer, Role::kScrape));
    EXPECT_FALSE(role_allows(Role::kViewer, Role::kSubmitter));
    EXPECT_TRUE(role_allows(Role::kSubmitter, Role::kViewer));
    EXPECT_FALSE(role_allows(Role::kSubmitter, Role::kActor));
    EXPECT_TRUE(role_allows(Role::kActor, Role::kViewer));
    EXPECT_FALSE(role_allows(Role::kActor, Role::kSubmitter));
    EXPECT_FALSE(role_allows(Role::kSubmitter, Role::kAdmin));
    for (Role r : {Role::kScrape, Role::kViewer, Role::kSubmitter, Role::kActor, Role::kAdmin})
        EXPECT_EQ(parse_role(role_name(r)), r);
    EXPECT_EQ(parse_role("root"), std::nullopt);
}

TEST(Auth, MissingUnknownAndWeakTokensAre401Or403) {
    Auth a;
    a.add("v-token", Role::kViewer, "v");
    EXPECT_EQ(a.check(with_auth(""), Role::kViewer).status, 401);
    EXPECT_EQ(a.check(with_auth("Bearer "), Role::kViewer).status, 401);
    EXPECT_EQ(a.check(with_auth("Bearer v-toke"), Role::kViewer).status, 401);
    EXPECT_EQ(a.check(with_auth("Bearer v-tokenx"), Role::kViewer).status, 401);
    EXPECT_EQ(a.check(with_auth("Basic v-token"), Role::kViewer).status, 401);
    const AuthDecision ok = a.check(with_auth("Bearer v-token"), Role::kViewer);
    EXPECT_TRUE(ok.ok());
    EXPECT_EQ(ok.who.name, "v");
    const AuthDecision weak = a.check(with_auth("Bearer v-token"), Role::kSubmitter);
    EXPECT_EQ(weak.status, 403);
    EXPECT_THAT(weak.error, HasSubstr("token 'v' has role viewer"));
    EXPECT_EQ(weak.response().status, 403);
    EXPECT_THAT(weak.response().body, HasSubstr("\"error\""));
}

TEST(Auth, CreatedTokensAreSavedMode0600AndLoadBack) {
    const std::string dir = temp_dir("file");
    const std::string path = dir + "/tokens.json";
    auto a = Auth::load(path);  // no file yet: empty
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    a->add("admin-token", Role::kAdmin, "admin");  // not persisted
    auto t1 = a->create(Role::kViewer, "ci");
    auto t2 = a->create(Role::kViewer, "ci");
    ASSERT_TRUE(t1.ok() && t2.ok());
    EXPECT_NE(*t1, *t2);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto b = Auth::load(path);
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_EQ(b->size(), 2u);  // the admin token added in memory was not written
    EXPECT_EQ(b->token_named("ci"), *t1);
    EXPECT_EQ(b->token_named("ci-2"), *t2);
    EXPECT_TRUE(b->check(with_auth("Bearer " + *t2), Role::kViewer).ok());
    EXPECT_EQ(b->check(with_auth("Bearer admin-token"), Role::kViewer).status, 401);
    std::filesystem::remove_all(dir);
}

TEST(Auth, MalformedTokenFileIsAnErrorNamingIt) {
    const std::string dir = temp_dir("bad");
    for (const std::string text :
         {"not json", R"({"tokens": 3})",
          R"({"tokens": [{"name": "x", "role": "root", "token": "t"}]})",
          R"({"tokens": [{"name": "x", "role": "viewer", "token": ""}]})"}) {
        std::ofstream(dir + "/tokens.json") << text;
        auto a = Auth::load(dir + "/tokens.json");
        ASSERT_FALSE(a.ok()) << text;
        EXPECT_THAT(a.status().message(), HasSubstr(dir + "/tokens.json")) << text;
    }
    std::filesystem::remove_all(dir);
}

TEST(StateLock, SecondHolderIsRefusedNamingTheFirstPid) {
    const std::string dir = temp_dir("lock");
    {
        auto first = StateLock::acquire(dir);
        ASSERT_TRUE(first.ok()) << first.status().to_string();
        // flock is per open file description: a child process's attempt is a second holder.
        const pid_t child = ::fork();
        if (child == 0) {
            auto second = StateLock::acquire(dir);
            const bool refused =
                !second.ok() && second.status().code() == StatusCode::kAlreadyExists &&
                second.status().message().find(fmt::format("pid {}", ::getppid())) !=
                    std::string::npos;
            ::_exit(refused ? 0 : 1);
        }
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        // The same process opening it again is refused too (a second open file description).
        auto again = StateLock::acquire(dir);
        ASSERT_FALSE(again.ok());
        EXPECT_THAT(again.status().message(), HasSubstr(fmt::format("pid {}", ::getpid())));
    }
    // Released with its owner.
    EXPECT_TRUE(StateLock::acquire(dir).ok());
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::coord
