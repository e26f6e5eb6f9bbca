# frozen_string_literal: true

# The team's `rake db:sync:*` tasks, each running the matching `syncd` command.
#
# Copy this file to the Rails app's lib/tasks/ (replacing the old db_sync.rake: two files
# defining the same tasks would run both). Rails is not needed to load it: outside an app,
# `rake -f db_sync.rake db:sync:status` works in the directory that holds config/syncd.yml.
#
#   rake db:sync:status                                  syncd status
#   rake db:sync:to_production                           syncd sync to_production
#   rake db:sync:from_production                         syncd sync from_production
#   rake db:sync:collection_to_production[users]         syncd sync to_production -C users
#   rake db:sync:collection_from_production[users]       syncd sync from_production -C users
#   rake db:sync:backup:local                            syncd backup create local
#   rake db:sync:backup:production                       syncd backup create production
#   rake db:sync:backup:list                             syncd backup list
#   rake db:sync:backup:restore_local[NAME]              syncd backup restore NAME --to local
#
# Environment:
#   SYNCD_CONFIG  the policy file (default: config/syncd.yml of the app), passed as -c
#   FORCE=true    answers the confirmation a protected endpoint asks for (--yes); it never
#                 silences drift protection. `rake TASK FORCE=true` works too.
#   SYNCD_BIN     the syncd executable when it is not on PATH (e.g. a virtualenv's bin/syncd)
#
# The flow names (to_production, from_production) and endpoint names (local, production)
# are those of syncd's example config, config/syncd.example.yaml.
#
# syncd's exit code is the task's: 0 done, 1 failed, 2 bad config or usage, 3 refused
# (drift, a protected endpoint without confirmation) with nothing written. A failing task
# stops the tasks after it on the same command line, as a failing `sh` would. When syncd
# is not installed the task says so and exits 127, the shell's "command not found".

module SyncdRake
  DEFAULT_CONFIG = File.join("config", "syncd.yml")
  # The values syncd itself takes as FORCE=true (syncd/cli.py, `forced`).
  FORCE_VALUES = %w[1 true yes].freeze
  NOT_FOUND = 127

  module_function

  # The task's work: run syncd with ARGS and end rake with syncd's exit code unless it is 0.
  def run(task, *args)
    program = executable(task)
    command = ["-c", config_path, *args]
    Rake.rake_output_message(display([shown(program), *command])) if verbose?
    code = wait_for([program, *command])
    exit(code) unless code.zero?
  end

  # --yes for the commands that ask before writing to a protected endpoint.
  def confirmation
    FORCE_VALUES.include?(ENV.fetch("FORCE", "").downcase) ? ["--yes"] : []
  end

  def required(task, args, name, hint)
    value = args[name].to_s.strip
    return value unless value.empty?

    warn "#{task.name}: needs a #{name}: rake \"#{task.name}[#{name.upcase}]\"; #{hint}"
    exit 2
  end

  # Every bracketed argument: `collection_to_production[users,roles]` is -C users -C roles.
  def collections(task, args)
    names = [required(task, args, :collection, "e.g. users")] + args.extras.map(&:strip)
    names.reject(&:empty?).flat_map { |name| ["-C", name] }
  end

  def app_root
    if defined?(Rails) && Rails.respond_to?(:root) && Rails.root
      Rails.root.to_s
    else
      Dir.pwd # rake runs in the directory of the Rakefile it found
    end
  end

  # SYNCD_CONFIG or config/syncd.yml, relative to the app's root; shown relative when the
  # app's root is the working directory.
  def config_path
    given = ENV.fetch("SYNCD_CONFIG", "").strip
    path = given.empty? ? DEFAULT_CONFIG : given
    root = app_root
    return path if File.absolute_path(root) == Dir.pwd && !path.start_with?("~")

    File.expand_path(path, root)
  end

  def executable(task)
    chosen = ENV.fetch("SYNCD_BIN", "").strip
    found = chosen.empty? ? on_path("syncd") : chosen
    return found if found && File.file?(found) && File.executable?(found)

    warn not_installed(task, chosen)
    exit NOT_FOUND
  end

  # "syncd" when it is the one on PATH: the command as a person would type it.
  def shown(program)
    program == on_path("syncd") ? "syncd" : program
  end

  def on_path(name)
    ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).reject(&:empty?).each do |dir|
      candidate = File.join(dir, name)
      return candidate if File.file?(candidate) && File.executable?(candidate)
    end
    nil
  end

  def not_installed(task, chosen)
    where = if chosen.empty?
              "syncd is not installed: no `syncd` on PATH"
            else
              "SYNCD_BIN=#{chosen} is not an executable file"
            end
    "#{task.name}: #{where}. The db:sync tasks run syncd: install it (in a virtualenv: " \
      "`pip install .` in syncd's source; see its README) and put that bin/ on PATH, or " \
      "set SYNCD_BIN to the syncd executable. Nothing was run."
  end

  # Runs the command and returns its exit code. Ctrl-C reaches syncd too (same process
  # group) and syncd decides how to stop, so rake waits for it instead of leaving it
  # running; a TERM sent to rake alone is passed on to syncd.
  def wait_for(command)
    pid = nil
    previous = {
      "INT" => trap("INT") {},
      "TERM" => trap("TERM") { pass_on("TERM", pid) },
    }
    begin
      pid = Process.spawn(*command)
      _, status = Process.wait2(pid)
    ensure
      previous.each { |signal, handler| trap(signal, handler || "DEFAULT") }
    end
    status.exitstatus || (128 + status.termsig.to_i)
  end

  def pass_on(signal, pid)
    Process.kill(signal, pid) if pid
  rescue Errno::ESRCH
    nil # syncd has just ended; its exit code follows
  end

  def display(command)
    command.map { |word| word =~ %r{\A[\w./:=@,+\-\[\]]+\z} ? word : word.inspect }.join(" ")
  end

  def verbose?
    flag = Rake::FileUtilsExt.verbose_flag
    flag == Rake::FileUtilsExt::DEFAULT || flag
  end
end

namespace :db do
  namespace :sync do
    desc "Endpoints, collections, pending changes, last sync (syncd status)"
    task :status do |t|
      SyncdRake.run(t, "status")
    end

    desc "Sync local -> production; FORCE=true confirms (syncd sync to_production)"
    task :to_production do |t|
      SyncdRake.run(t, "sync", "to_production", *SyncdRake.confirmation)
    end

    desc "Sync production -> local (syncd sync from_production)"
    task :from_production do |t|
      SyncdRake.run(t, "sync", "from_production", *SyncdRake.confirmation)
    end

    desc "Sync one collection local -> production (syncd sync to_production -C NAME)"
    task :collection_to_production, [:collection] do |t, args|
      names = SyncdRake.collections(t, args)
      SyncdRake.run(t, "sync", "to_production", *names, *SyncdRake.confirmation)
    end

    desc "Sync one collection production -> local (syncd sync from_production -C NAME)"
    task :collection_from_production, [:collection] do |t, args|
      names = SyncdRake.collections(t, args)
      SyncdRake.run(t, "sync", "from_production", *names, *SyncdRake.confirmation)
    end

    namespace :backup do
      desc "Back up the local database (syncd backup create local)"
      task :local do |t|
        SyncdRake.run(t, "backup", "create", "local")
      end

      desc "Back up the production database (syncd backup create production)"
      task :production do |t|
        SyncdRake.run(t, "backup", "create", "production")
      end

      desc "List backups, newest first (syncd backup list)"
      task :list do |t|
        SyncdRake.run(t, "backup", "list")
      end

      desc "Restore a backup into local (syncd backup restore NAME --to local)"
      task :restore_local, [:name] do |t, args|
        name = SyncdRake.required(t, args, :name, "`rake db:sync:backup:list` shows the names")
        SyncdRake.run(t, "backup", "restore", name, "--to", "local", *SyncdRake.confirmation)
      end
    end
  end
end
