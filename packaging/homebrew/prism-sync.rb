# Homebrew formula for Prism Sync.
#
# Before publishing it in a tap, set `url` and `sha256` to the release
# tarball and `homepage`/`head` to the project's repository: the
# placeholders below (*.invalid) are not real addresses.
#
# `brew services start prism-sync` runs the agent at login through the
# `service do` block below (Homebrew writes its own launchd plist from it,
# with the same restart rules as launchd/com.prism-sync.prism-syncd.plist).
# Do not also run `prism-syncctl service install`: that would load a second
# launchd job for the same agent (the second one refuses to start, but
# keeps being retried).
class PrismSync < Formula
  desc "Two-way file-sync agent with a SQLite change journal"
  homepage "https://prism-sync.invalid/"
  url "https://prism-sync.invalid/releases/prism-sync-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://prism-sync.invalid/prism-sync.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args
    # Completions and man pages come from the clap definitions of the
    # binaries just built, so they match their flags exactly.
    generate_completions_from_executable(bin/"prism-syncctl", "completions")
    generate_completions_from_executable(bin/"prism-syncctl", "completions", "--binary", "prism-syncd",
                                         base_name: "prism-syncd")
    system bin/"prism-syncctl", "man", "--out-dir", buildpath/"man"
    man1.install Dir[buildpath/"man/*.1"]
  end

  service do
    run opt_bin/"prism-syncd"
    # Restart after a crash or a failure exit, not after a clean stop.
    # launchd cannot exempt exit 78 (configuration error) the way systemd's
    # RestartPreventExitStatus does; the throttle keeps that to one attempt
    # a minute until the config is fixed.
    keep_alive successful_exit: false
    throttle_interval 60
    process_type :background
    log_path var/"log/prism-sync/prism-syncd.out.log"
    error_log_path var/"log/prism-sync/prism-syncd.err.log"
  end

  def post_install
    (var/"log/prism-sync").mkpath
  end

  test do
    assert_match "prism-syncd", shell_output("#{bin}/prism-syncd --version")
    assert_match "service", shell_output("#{bin}/prism-syncctl --help")
    (testpath/"local").mkpath
    (testpath/"remote").mkpath
    (testpath/"local/hello.txt").write "hello"
    system bin/"prism-syncd", "--state-dir", testpath/"state", "--local", testpath/"local",
           "--remote", "file://#{testpath}/remote", "--once"
    assert_equal "hello", (testpath/"remote/hello.txt").read
  end
end
