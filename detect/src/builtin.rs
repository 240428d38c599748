//! The built-in Linux Sigma rule pack, embedded in the binary so the agent detects
//! with no files on disk. Content only: the rules live in `detect/rules/builtin/`,
//! each with true- and false-positive events in `detect/rules/tests/`. A few are
//! SigmaHQ rules tuned for Ward (`*_tuned.yml`: `related` names the upstream rule,
//! the author is kept under the Detection Rule License); the upstream rule is then in
//! `defaultpack::SIGMAHQ_EXCLUDED`.

use ward_protocol::RuleFile;

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        /// `(file name, YAML)` of every built-in rule.
        pub const BUILTIN_RULES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../rules/builtin/", $name))),)*
        ];
    };
}

builtin!(
    "lnx_ward_at_job.yml",
    "lnx_ward_at_spool.yml",
    "lnx_ward_cloud_credentials_read.yml",
    "lnx_ward_audit_disabled.yml",
    "lnx_ward_base64_decode_exec.yml",
    "lnx_ward_credential_file_read.yml",
    "lnx_ward_cron_persistence.yml",
    "lnx_ward_crontab_from_stdin.yml",
    "lnx_ward_cryptominer.yml",
    "lnx_ward_deleted_binary_running.yml",
    "lnx_ward_discovery_commands.yml",
    "lnx_ward_download_pipe_shell.yml",
    "lnx_ward_exec_from_tmp.yml",
    "lnx_ward_firewall_or_selinux_disabled.yml",
    "lnx_ward_hidden_file_exec.yml",
    "lnx_ward_history_clearing.yml",
    "lnx_ward_history_file_deleted.yml",
    "lnx_ward_kernel_module_auditd.yml",
    "lnx_ward_kernel_module_load.yml",
    "lnx_ward_known_bad_file_hash.yml",
    "lnx_ward_known_bad_process_hash.yml",
    "lnx_ward_pipe_into_shell.yml",
    "lnx_ward_ld_so_preload.yml",
    "lnx_ward_log_file_deleted.yml",
    "lnx_ward_log_file_truncated.yml",
    "lnx_ward_log_tampering_cmd.yml",
    "lnx_ward_masquerading_system_name.yml",
    "lnx_ward_pam_config_changed.yml",
    "lnx_ward_rc_local_init_script.yml",
    "lnx_ward_revshell_dev_tcp.yml",
    "lnx_ward_revshell_netcat_exec.yml",
    "lnx_ward_revshell_script_socket.yml",
    "lnx_ward_setcap_privileged.yml",
    "lnx_ward_setuid_chmod.yml",
    "lnx_ward_setuid_file_mode.yml",
    "lnx_ward_shadow_read_auditd.yml",
    "lnx_ward_shadow_read_cmdline.yml",
    "lnx_ward_shell_profile_modified.yml",
    "lnx_ward_shell_susp_commands_tuned.yml",
    "lnx_ward_ssh_auth_failure.yml",
    "lnx_ward_ssh_authorized_keys.yml",
    "lnx_ward_ssh_private_key_read.yml",
    "lnx_ward_ssh_bruteforce_correlation.yml",
    "lnx_ward_ssh_bruteforce_limit.yml",
    "lnx_ward_ssh_root_login.yml",
    "lnx_ward_sudo_root_shell.yml",
    "lnx_ward_sudo_shell_command_log.yml",
    "lnx_ward_systemd_run_timer.yml",
    "lnx_ward_systemd_timer_file.yml",
    "lnx_ward_systemd_unit_persistence.yml",
    "lnx_ward_user_added.yml",
    "lnx_ward_user_added_log.yml",
    "lnx_ward_user_added_to_admin_group.yml",
    "lnx_ward_webserver_spawns_shell.yml",
    "lnx_ward_local_account_discovery.yml",
    "lnx_ward_local_group_discovery.yml",
    "lnx_ward_service_discovery.yml",
    "lnx_ward_network_connections_discovery.yml",
    "lnx_ward_security_software_discovery.yml",
    "lnx_ward_virtualization_check.yml",
    "lnx_ward_password_policy_discovery.yml",
    "lnx_ward_credential_search.yml",
    "lnx_ward_private_key_search.yml",
    "lnx_ward_passphrase_encryption.yml",
    "lnx_ward_python_archive.yml",
    "lnx_ward_hidden_dir_in_tmp.yml",
    "lnx_ward_dot_directory_exec.yml",
    "lnx_ward_sudoers_changed.yml",
    "lnx_ward_sudoers_edited_cmdline.yml",
    "lnx_ward_journald_storage_off.yml",
    "lnx_ward_dd_overwrite.yml",
    "lnx_ward_split_fixed_size.yml",
    "lnx_ward_remote_system_discovery.yml",
    "lnx_ward_logged_on_users.yml",
    "lnx_ward_system_language_discovery.yml",
    "lnx_ward_kernel_driver_discovery.yml",
    "lnx_ward_shred_remove.yml",
    "lnx_ward_base64_decode_cmdline.yml",
    "lnx_ward_setuid_search.yml",
    "lnx_ward_shell_history_read.yml",
    "lnx_ward_renamed_system_binary.yml",
);

/// The built-in pack as rule files, ready for [`super::Detector::load`].
pub fn builtin_rule_files() -> Vec<RuleFile> {
    BUILTIN_RULES
        .iter()
        .map(|(name, yaml)| RuleFile {
            name: format!("builtin/{name}"),
            yaml: (*yaml).to_string(),
        })
        .collect()
}
