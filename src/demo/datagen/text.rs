//! Words for the generated rows. Some strings carry tabs, newlines, backslashes and non-ASCII
//! text on purpose: Dify's logs do, and exports and COPY must survive them.

use fastrand::Rng;

pub(super) const COMPANIES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Wonka",
    "Oscorp",
];

pub(super) const MEMBERS: &[&str] = &[
    "Alice", "Bob", "Chen Wei", "Dana", "Élodie", "Farid", "Grace", "Hiroshi",
];

pub(super) const APP_NAMES: &[&str] = &[
    "Support Bot",
    "Sales Assistant",
    "Invoice Extractor",
    "Release Notes Writer",
    "Research Agent",
    "HR Helpdesk",
    "SQL Copilot",
    "Translation Flow",
    "Onboarding Guide",
    "Ticket Triage",
];

pub(super) const DATASET_NAMES: &[&str] = &[
    "Product Manual",
    "Support Knowledge Base",
    "Engineering Handbook",
    "Legal Policies",
    "FAQ 常见问题",
];

pub(super) const QUERIES: &[&str] = &[
    "How do I reset my password?",
    "Summarise this quarter's sales numbers.",
    "What is the refund policy for annual plans?",
    "Translate \"good morning\" into French and German.",
    "Write a SQL query that lists the ten largest tables.",
    "Which regions had the most tickets last week?",
    "Explain the difference between RAG and fine-tuning.",
    "请总结一下这份文档的要点。",
    "Can you draft an email to the customer about the outage?",
    "Why does the export fail with C:\\temp\\out.csv?",
    "List the steps\tto rotate an API key.",
    "Is the Pro plan billed per seat?",
];

pub(super) const ANSWERS: &[&str] = &[
    "To reset your password, open Settings → Account and choose \"Reset password\". \
     You will receive an email with a link that is valid for 30 minutes.",
    "Sales grew 12% quarter over quarter.\n\n| Region | Growth |\n|---|---|\n| EMEA | 15% |\n| APAC | 9% |",
    "Annual plans can be refunded pro rata within 30 days of purchase. After that, the plan \
     stays active until the end of the term.",
    "French: « Bonjour ». German: „Guten Morgen“.",
    "```sql\nSELECT relname, pg_total_relation_size(relid)\nFROM pg_catalog.pg_statio_user_tables\n\
     ORDER BY 2 DESC\nLIMIT 10;\n```",
    "EMEA had the most tickets (412), followed by North America (377).",
    "RAG retrieves relevant documents at query time and passes them to the model; fine-tuning \
     changes the model's weights. RAG keeps answers current without retraining.",
    "这份文档主要介绍了产品的安装步骤、配置方法以及常见问题的解决方案。",
    "Subject: Service disruption on 3 June\n\nDear customer,\n\nwe are sorry for the interruption…",
    "Use a path without backslashes, e.g. C:/temp/out.csv, or escape them as C:\\\\temp.",
    "1.\tCreate a new key.\n2.\tDeploy it.\n3.\tRevoke the old key.",
    "Yes: the Pro plan is billed per seat, monthly or yearly.",
];

pub(super) const PARAGRAPHS: &[&str] = &[
    "Upkeep runs beside Dify and keeps its storage tidy. Each maintenance chore is a job that \
     can be paused, resumed and observed.",
    "To install the agent, download the package for your platform and run the installer. The \
     default configuration listens on port 8080.",
    "Refunds are processed within five business days. Contact billing@example.com for any \
     question about invoices.",
    "The API accepts JSON bodies encoded as UTF-8. Every response carries a request id that \
     support can use to find the logs.",
    "安装完成后，请在控制台中配置数据库连接，并重启服务以使配置生效。",
    "Rate limits apply per workspace: 60 requests per minute on the sandbox plan and 600 on \
     paid plans.",
    "Backups are taken nightly and kept for 30 days. Restores can be requested from the \
     administration panel.",
    "Passwords must have at least twelve characters, including one digit and one symbol.",
];

pub(super) const USER_FILES: &[(&str, &str, &str)] = &[
    ("png", "image/png", "screenshot"),
    ("jpg", "image/jpeg", "photo"),
    ("pdf", "application/pdf", "contract"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "notes",
    ),
    ("txt", "text/plain", "log"),
    ("md", "text/markdown", "readme"),
];

pub(super) const DOCUMENT_FILES: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("md", "text/markdown"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("txt", "text/plain"),
];

pub(super) const NODE_TYPES: &[(&str, &str)] = &[
    ("llm", "LLM"),
    ("knowledge-retrieval", "Knowledge Retrieval"),
    ("code", "Code"),
    ("if-else", "IF/ELSE"),
    ("template-transform", "Template"),
    ("http-request", "HTTP Request"),
    ("tool", "Google Search"),
];

pub(super) fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// A rough token count, as the providers report it for English text.
pub(super) fn tokens(text: &str) -> i64 {
    i64::try_from(text.len() / 4).unwrap_or(i64::MAX) + 1
}

pub(super) fn words(text: &str) -> i64 {
    i64::try_from(text.split_whitespace().count()).unwrap_or(i64::MAX)
}

/// Escapes `s` for embedding in a JSON string literal.
pub(super) fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}
