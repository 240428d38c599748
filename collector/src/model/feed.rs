//! What the identity and mailbox feeds bring, normalized: a sign-in, a mail
//! record, an inbox-rule change. The feeds' readers make them; the store keeps them.

use std::net::IpAddr;

/// How a sign-in ended, as the detections need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInOutcome {
    Success,
    /// Wrong credentials, locked or disabled account and other refusals.
    Failure,
    /// The user denied (or let time out) an MFA prompt.
    MfaDenied,
    /// Interrupted for more proof (MFA required, consent, ...): neither success nor failure.
    Interrupted,
}

impl SignInOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInOutcome::Success => "success",
            SignInOutcome::Failure => "failure",
            SignInOutcome::MfaDenied => "mfa_denied",
            SignInOutcome::Interrupted => "interrupted",
        }
    }
}

/// A normalized sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct SignIn {
    /// Natural dedup key: `entra:<id>`, `okta:<uuid>:<time ms>`, `mdi:<report id>:<time ms>:<user>`, or `<provider>:sha256:<hex>`.
    pub key: String,
    /// `entra`, `okta` or `defender-identity` (Defender for Identity logons).
    pub provider: &'static str,
    pub time_ms: u64,
    /// User principal name (or service principal), lowercased.
    pub user: String,
    pub ip: Option<IpAddr>,
    /// "City, State, Country" as far as known.
    pub location: Option<String>,
    /// Latitude, longitude.
    pub coords: Option<(f64, f64)>,
    pub app: Option<String>,
    pub client: Option<String>,
    pub outcome: SignInOutcome,
    /// Entra result type (error code) or Okta outcome.result.
    pub result: String,
    pub result_detail: Option<String>,
    pub risk_level: Option<String>,
    pub risk_state: Option<String>,
    pub conditional_access: Option<String>,
    pub mfa: Option<String>,
    pub device: Option<String>,
    /// The record as it came, compact JSON.
    pub raw: String,
}

/// What a mail record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Email,
    Attachment,
    Url,
    Click,
    PostDelivery,
    /// An inbox rule or mailbox forwarding set (Exchange audit).
    InboxRule,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Email => "email",
            MailKind::Attachment => "attachment",
            MailKind::Url => "url",
            MailKind::Click => "click",
            MailKind::PostDelivery => "post_delivery",
            MailKind::InboxRule => "inbox_rule",
        }
    }

    pub fn parse(s: &str) -> Option<MailKind> {
        [
            MailKind::Email,
            MailKind::Attachment,
            MailKind::Url,
            MailKind::Click,
            MailKind::PostDelivery,
            MailKind::InboxRule,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A normalized mail record: one row of one of the Defender email tables, one
/// recipient, attachment or URL of a Proofpoint message, or one inbox-rule change.
#[derive(Debug, Clone, PartialEq)]
pub struct MailRecord {
    /// Natural dedup key from the message id, recipient and the row's own part.
    pub key: String,
    pub kind: MailKind,
    pub time_ms: u64,
    pub network_message_id: Option<String>,
    /// Sender address (FROM header), lowercased.
    pub sender: Option<String>,
    /// Recipient address (the clicking account for clicks), lowercased.
    pub recipient: Option<String>,
    pub subject: Option<String>,
    pub threat_types: Option<String>,
    pub detection_methods: Option<String>,
    pub delivery_action: Option<String>,
    pub delivery_location: Option<String>,
    pub file_name: Option<String>,
    /// Lowercase hex.
    pub sha256: Option<String>,
    pub url: Option<String>,
    /// Click action (ClickAllowed, ...) or post-delivery action type.
    pub action: Option<String>,
    pub ip: Option<IpAddr>,
    /// What an inbox-rule change does (`InboxRule` records only; not a column of its
    /// own in the store: the detection reads it from the fresh record).
    pub rule: Option<Box<InboxRule>>,
    pub raw: String,
}

/// An inbox rule or mailbox forwarding as the audit log records its change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboxRule {
    /// `New-InboxRule`, `Set-InboxRule`, `Set-Mailbox`, ...
    pub operation: String,
    pub name: Option<String>,
    /// Addresses mail is forwarded or redirected to, lowercased, without `smtp:`.
    pub forward_to: Vec<String>,
    /// How the rule keeps mail from its owner ("deletes it", "moves it to Junk Email", ...).
    pub hides: Vec<String>,
    /// The rule's conditions as `Name=Value`.
    pub conditions: Vec<String>,
    /// Domains of the owner's organisation (its address and the tenant name).
    pub own_domains: Vec<String>,
}

/// What a directory or audit event did, as the detections read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A credential (secret or certificate) added to an application or service principal.
    AppCredential,
    /// A user or admin consented to an application.
    Consent,
    /// A delegated permission grant or an app role assigned to a service principal.
    PermissionGrant,
    /// A role or admin privilege given to a user or group.
    RoleAssigned,
    /// A user flagged at risk (Entra ID Protection).
    RiskyUser,
    /// An MFA factor removed, deactivated or reset.
    MfaFactorRemoved,
    /// An authentication policy or rule changed.
    PolicyChanged,
    /// Mail items read or synced (`MailItemsAccessed`).
    MailAccess,
    /// Mail sent as or on behalf of a mailbox (`Send`, `SendAs`, `SendOnBehalf`).
    MailSend,
    /// Mail deleted (`HardDelete`, `SoftDelete`, `MoveToDeletedItems`).
    MailDelete,
    /// Mailbox or folder permissions added or changed.
    MailboxPermission,
    /// Any other directory or cloud-app event of a known source (stored for hunting).
    Other,
}

impl AuditKind {
    pub const ALL: [AuditKind; 12] = [
        AuditKind::AppCredential,
        AuditKind::Consent,
        AuditKind::PermissionGrant,
        AuditKind::RoleAssigned,
        AuditKind::RiskyUser,
        AuditKind::MfaFactorRemoved,
        AuditKind::PolicyChanged,
        AuditKind::MailAccess,
        AuditKind::MailSend,
        AuditKind::MailDelete,
        AuditKind::MailboxPermission,
        AuditKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AppCredential => "app_credential",
            AuditKind::Consent => "consent",
            AuditKind::PermissionGrant => "permission_grant",
            AuditKind::RoleAssigned => "role_assigned",
            AuditKind::RiskyUser => "risky_user",
            AuditKind::MfaFactorRemoved => "mfa_factor_removed",
            AuditKind::PolicyChanged => "policy_changed",
            AuditKind::MailAccess => "mail_access",
            AuditKind::MailSend => "mail_send",
            AuditKind::MailDelete => "mail_delete",
            AuditKind::MailboxPermission => "mailbox_permission",
            AuditKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A normalized directory, audit or cloud-app event: an Entra ID audit log entry or
/// risky-user record, an Okta System Log event that is not a sign-in, a Microsoft 365
/// mailbox audit record, a Defender `CloudAppEvents` or `IdentityDirectoryEvents` row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Natural dedup key: `entra-audit:<id>`, `okta:<uuid>:<time ms>`, `m365:<id>:<mailbox>`, ... or `<provider>:sha256:<hex>`.
    pub key: String,
    /// `entra`, `okta`, `m365`, `defender-cloudapps`, `defender-identity`.
    pub provider: &'static str,
    pub kind: AuditKind,
    pub time_ms: u64,
    /// The operation as the source names it (`Add service principal credentials`, `user.mfa.factor.deactivate`, `MailItemsAccessed`).
    pub operation: String,
    /// Who did it: a user principal name (lowercased), else an application's name.
    pub actor: Option<String>,
    /// The user acted on (the role's new member, the factor's owner, the risky user), lowercased.
    pub target_user: Option<String>,
    /// The application or service principal acted on (credential, consent) or acting (mail access): its app id, lowercased.
    pub app_id: Option<String>,
    pub app_name: Option<String>,
    /// The mailbox acted on, lowercased.
    pub mailbox: Option<String>,
    pub ip: Option<IpAddr>,
    /// What changed: the role, the permissions, the factor, the folders, the risk detail.
    pub detail: Option<String>,
    /// Items the event covers (mail items accessed or deleted; 1 otherwise).
    pub items: u64,
    /// Whether the source says it failed.
    pub failed: bool,
    /// Risk level (risky users), lowercased.
    pub risk_level: Option<String>,
    /// Whether the application's publisher is verified, when the record says.
    pub publisher_verified: Option<bool>,
    /// The record as it came, compact JSON.
    pub raw: String,
}
