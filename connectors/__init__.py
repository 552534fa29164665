"""Channels: convert Slack/Telegram/web traffic to UserMessage and BotResponse back."""
