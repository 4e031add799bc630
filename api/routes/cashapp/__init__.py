"""Cash App Assist routes: bank files and remittances in, the exceptions queue, applied cash out."""
